#!/bin/sh
# One-shot (compose service minio-init): the artifacts bucket, and MLflow's own account, allowed that
# bucket only. Keys come from the environment; the root account is passed to mc through MC_HOST_local
# (an environment variable, not an argument). Idempotent: safe to run at every `compose up`.
set -eu
export MC_HOST_local="http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@minio:9000"
tries=0
until mc ready local >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "minio-init: MinIO at minio:9000 not ready after 60 s" >&2; exit 1; }
    sleep 1
done
mc mb --ignore-existing "local/${MMPC_BUCKET}"
cat > /tmp/mmpc-mlflow-policy.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
     "Resource": ["arn:aws:s3:::${MMPC_BUCKET}"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::${MMPC_BUCKET}/*"]}
  ]
}
JSON
mc admin policy create local mmpc-mlflow /tmp/mmpc-mlflow-policy.json
mc admin user add local "${MLFLOW_S3_ACCESS_KEY}" "${MLFLOW_S3_SECRET_KEY}"
mc admin policy attach local mmpc-mlflow --user "${MLFLOW_S3_ACCESS_KEY}" 2>/dev/null || true  # attached already
echo "minio-init: bucket ${MMPC_BUCKET} and MLflow's account ready"
