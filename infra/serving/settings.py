"""A stack's settings (``stack.json``): the proxy's port, the registered model and alias it follows,
how often and how patiently. Chosen at ``up`` (options, else the stored value, else the default)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, fields, replace

from infra.local import processes
from infra.serving.layout import Layout, write_atomic


@dataclass(frozen=True)
class Settings:
    port: int = 0  # 0: a free port, chosen at the first up
    listen: str = processes.HOST  # 0.0.0.0 where nginx runs in a container with a published port
    model: str = "mmpc-ensemble"
    alias: str = "champion"
    poll_s: float = 3.0  # how often the controller reads the alias
    start_timeout_s: float = 300.0  # a new model server has this long to answer a prediction
    retry_after_s: float = 600.0  # a version that failed is not tried again before this

    def check(self) -> Settings:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port (1-65535)")
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            raise ValueError(f"listen address {self.listen!r} is not an IP address") from None
        if not self.model.strip() or not self.alias.strip() or "/" in self.model + self.alias:
            raise ValueError(f"model {self.model!r} / alias {self.alias!r}: both needed, without '/'")
        for name in ("poll_s", "start_timeout_s", "retry_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        return self


def load(layout: Layout) -> Settings | None:
    if not layout.settings.is_file():
        return None
    data = json.loads(layout.settings.read_text())
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in data.items() if k in known})


def resolve(layout: Layout, **given: object) -> Settings:
    """Stored settings with the options given (not None) applied; a free port at the first up."""
    current = load(layout) or Settings()
    current = replace(current, **{k: v for k, v in given.items() if v is not None})
    if not current.port:
        current = replace(current, port=processes.free_port())
    current.check()
    write_atomic(layout.settings, json.dumps(asdict(current), indent=2) + "\n")
    return current


def required(layout: Layout) -> Settings:
    found = load(layout)
    if found is None:
        raise FileNotFoundError(f"no serving stack under {layout.root}: run `up` first")
    return found
