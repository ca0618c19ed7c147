#!/bin/sh
# PostgreSQL's first start (docker-entrypoint-initdb.d): a login role and a database for each service.
# Passwords come from the environment; psql variables keep them out of the SQL text and the logs.
set -eu
for service in mlflow prefect; do
    case "$service" in
        mlflow) password="$MLFLOW_DB_PASSWORD" ;;
        prefect) password="$PREFECT_DB_PASSWORD" ;;
    esac
    psql -v ON_ERROR_STOP=1 -v name="$service" -v password="$password" \
        --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
done
# The MLflow server's users and permissions (its basic-auth app), beside its runs.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c 'CREATE DATABASE mlflow_auth OWNER mlflow;'
