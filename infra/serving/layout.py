"""Where a serving stack keeps its files under its root folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path.home() / ".mmpc" / "serving"
ROOT_ENV = "MMPC_SERVING_ROOT"


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None) -> Layout:
        chosen = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser().resolve()
        if chosen.exists() and not chosen.is_dir():
            raise ValueError(f"--root {chosen} is not a folder")
        return cls(chosen)

    @property
    def tls(self) -> Path:  # private keys: 0700
        return self.root / "tls"

    @property
    def secrets(self) -> Path:  # the bearer token and nginx's copy of it: 0700
        return self.root / "secrets"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:  # pid files, the rollout lock
        return self.root / "run"

    @property
    def ca_pem(self) -> Path:  # what clients verify the proxy's certificate against
        return self.root / "ca.pem"

    @property
    def nginx_conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def upstream_conf(self) -> Path:  # rewritten at each rollout: the model server and its version
        return self.root / "upstream.conf"

    @property
    def settings(self) -> Path:  # fixed at the first up: port, model name, alias
        return self.root / "stack.json"

    @property
    def status(self) -> Path:  # serving version, last attempt, failed versions
        return self.root / "status.json"

    @property
    def token_file(self) -> Path:
        return self.secrets / "token"

    def make(self) -> None:
        for folder in (self.root, self.logs, self.run, self.root / "nginx-temp"):
            folder.mkdir(parents=True, exist_ok=True)
        for private in (self.tls, self.secrets):
            private.mkdir(parents=True, exist_ok=True)
            private.chmod(0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, never readable by others even for a moment."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    """Readers (nginx -t, status) see the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
