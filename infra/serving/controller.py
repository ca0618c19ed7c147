"""The controller: a background process that reads the registry alias every ``poll_s`` seconds and
rolls out the version it names (``rollout.check_and_roll``) when it moves, after a retrain's
promotion, ``mmpc promote`` or ``mmpc rollback``. Its log is ``logs/controller.log``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from infra.local import processes
from infra.serving import rollout, settings
from infra.serving.layout import Layout

log = logging.getLogger("infra.serving")
REPO = Path(__file__).resolve().parents[2]


def pid(layout: Layout) -> int | None:
    return processes.read_pid(layout.run / "controller.pid", "infra.serving")


def start(layout: Layout) -> int:
    """The controller as a detached process with this environment (the registry, its credentials)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "infra.serving", "--root", str(layout.root), "watch"]
    return processes.start(
        argv,
        env=env,
        log_file=layout.logs / "controller.log",
        pid_file=layout.run / "controller.pid",
        cwd=layout.root,
    )


def stop(layout: Layout, grace: float = 10) -> bool:
    found = pid(layout)
    if found is None:
        return False
    processes.stop(found, grace)
    (layout.run / "controller.pid").unlink(missing_ok=True)
    return True


def watch(layout: Layout) -> None:
    """Check and roll until SIGTERM; a rollout in progress is ended by it (its new server stopped)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    stopping = threading.Event()

    def _terminate(signum: int, frame: object) -> None:
        stopping.set()
        raise SystemExit(0)  # unwinds a rollout: its new model server is stopped on the way out

    signal.signal(signal.SIGTERM, _terminate)
    conf = settings.required(layout)
    log.info("watching %s@%s every %.1f s", conf.model, conf.alias, conf.poll_s)
    last_message = ""
    while not stopping.is_set():
        try:
            outcome = rollout.check_and_roll(layout, conf)
            message = "" if outcome.changed else outcome.message  # a rollout logs its own steps
        except rollout.VersionFailed:
            message = ""  # logged with its reason by the rollout
        except rollout.RolloutError as exc:
            message = str(exc).splitlines()[0]
        except Exception as exc:  # a registry outage or the like: keep serving, keep watching
            message = f"check failed: {type(exc).__name__}: {exc}"
        if message and message != last_message:  # one line per change, not one per poll
            log.info("%s", message)
        last_message = message
        stopping.wait(conf.poll_s)
