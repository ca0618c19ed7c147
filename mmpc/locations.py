"""Catalog locations: a local folder, or ``s3://bucket/prefix`` holding the same layout.

An S3 catalog is mirrored into a local folder before it is read: only new or changed objects
(by ETag and size) are downloaded, objects gone from the bucket are removed from the mirror, and
each file is written atomically, so an interrupted sync never leaves a half-written image. The
mirror keeps the prefix's last component as its folder name, so the catalog (and its MLflow
experiment) is named the same wherever it lives.

Credentials and the endpoint come from the environment or an AWS profile, as boto3 reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``); an S3
server other than AWS (SeaweedFS, MinIO) may also be named by ``MLFLOW_S3_ENDPOINT_URL``.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

# Where a command keeps its store, artifacts and checkpoints when no --workdir is given.
DEFAULT_WORKDIR = "mmpc-work"
INDEX_FILE = ".mmpc-s3-index.json"
DOWNLOAD_THREADS = 16


class LocationError(ValueError):
    """A catalog location cannot be read; the message names the location and why."""


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def split_s3(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if not bucket or not prefix:
        raise LocationError(f"{location}: expected s3://bucket/prefix (a catalog lives under a prefix)")
    return bucket, prefix


def s3_client():
    """A boto3 S3 client; a non-AWS endpoint gets path-style addressing (SeaweedFS, MinIO)."""
    import boto3
    from botocore.config import Config

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    )
    config = Config(s3={"addressing_style": "path"} if endpoint else {}, retries={"max_attempts": 5})
    # A session of its own: boto3's default one reads the profile files once per process, and a
    # long-lived process (a served deployment) must see the environment of each run.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def materialize(location: str | Path, cache_root: str | Path) -> Path:
    """A local folder holding the catalog: ``location`` itself, or its S3 mirror under ``cache_root``."""
    if not is_s3(location):
        return Path(location)
    bucket, prefix = split_s3(str(location))
    return sync_s3(bucket, prefix, Path(cache_root) / bucket / prefix)


def _listing(client, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    from botocore.exceptions import ClientError

    objects: dict[str, tuple[str, int]] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) + 1 :]
                if rel and not rel.endswith("/"):
                    objects[rel] = (obj["ETag"].strip('"'), int(obj["Size"]))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise LocationError(f"s3://{bucket}/{prefix}: cannot list the catalog ({code}: {exc})") from exc
    if not objects:
        raise LocationError(f"s3://{bucket}/{prefix}: no objects under this prefix")
    return objects


def sync_s3(bucket: str, prefix: str, dest: Path) -> Path:
    """Mirror ``s3://bucket/prefix/`` into ``dest``; returns ``dest``."""
    client = s3_client()
    remote = _listing(client, bucket, prefix)
    dest.mkdir(parents=True, exist_ok=True)
    index_path = dest / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    stale = [
        rel
        for rel, (etag, size) in remote.items()
        if index.get(rel) != [etag, size] or not (dest / rel).is_file()
    ]

    def fetch(rel: str) -> None:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        client.download_file(bucket, f"{prefix}/{rel}", str(partial))
        partial.replace(target)

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(fetch, stale))
    for rel in set(index) - set(remote):
        (dest / rel).unlink(missing_ok=True)
    partial_index = index_path.with_name(INDEX_FILE + ".part")
    partial_index.write_text(json.dumps({rel: list(v) for rel, v in remote.items()}))
    partial_index.replace(index_path)
    log.info(
        "s3://%s/%s: %d objects, %d downloaded, mirrored in %s", bucket, prefix, len(remote), len(stale), dest
    )
    return dest
