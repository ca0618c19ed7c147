"""nginx as the TLS reverse proxy: its configuration rendered into the stack's root, started with
``-p ROOT -c ROOT/nginx.conf -g 'daemon off;'`` and its master's pid tracked, reloaded gracefully
(SIGHUP) when ``upstream.conf`` names another model server."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.local import processes
from infra.serving import model_servers
from infra.serving.layout import Layout, write_atomic

log = logging.getLogger("infra.serving")
NGINX_ENV = "MMPC_NGINX"  # another nginx binary than the one on PATH

# Limits in line with the model server's own (mmpc.serving_input.Limits: 64 MB per request, a full
# request answered well inside MLflow's 60 s timeout).
MAX_BODY = "64m"
READ_TIMEOUT_S = 120
DRAIN_TIMEOUT_S = READ_TIMEOUT_S + 15  # an old worker's last request is answered or timed out by then
# Idle and slow clients: uvicorn closes no connection that has not sent a whole request (a silent one,
# or one trickling its headers, is held for ever), so the proxy does. A connection that has not sent
# its request head (the TLS handshake included) within CLIENT_HEADER_TIMEOUT_S, or pauses longer
# than CLIENT_BODY_TIMEOUT_S between two reads of its body, is closed; so is one reading the answer
# slower, or idle between requests longer than KEEPALIVE_TIMEOUT_S. One address has at most
# CONNECTIONS_PER_ADDRESS requests in flight (429 past it).
CLIENT_HEADER_TIMEOUT_S = 10
CLIENT_BODY_TIMEOUT_S = 10
SEND_TIMEOUT_S = 30
KEEPALIVE_TIMEOUT_S = 15
CONNECTIONS_PER_ADDRESS = 32
# Kept-alive connections to a model server are dropped before uvicorn drops them (its keep-alive
# timeout): nginx never sends a request on a connection the model server is closing.
UPSTREAM_KEEPALIVE_S = int(model_servers.uvicorn_env()["UVICORN_TIMEOUT_KEEP_ALIVE"]) - 1


def binary() -> str:
    found = os.environ.get(NGINX_ENV) or shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).is_file():
        raise FileNotFoundError(f"nginx not found ({found}); install it or set {NGINX_ENV}")
    return found


def _user_line() -> str:
    # A root master runs its workers as nobody; they read no file of the root (certificates, token and
    # logs are opened by the master, and nothing is buffered to disk).
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"


_CONF = """# written by infra.serving at each up; the model server is in upstream.conf
{user}worker_processes 2;
worker_shutdown_timeout {drain_s}s;
pid {run}/nginx.pid;
error_log {logs}/nginx-error.log notice;

events {{
    worker_connections 1024;
}}

http {{
    log_format mmpc '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                    '$request_time s upstream=$upstream_addr version=$mmpc_model_version';
    access_log {logs}/nginx-access.log mmpc;
    server_tokens off;
    default_type application/json;

    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    client_max_body_size {max_body};
    client_header_timeout {header_s}s;
    client_body_timeout {body_s}s;
    send_timeout {send_s}s;
    keepalive_timeout {keepalive_s}s;
    keepalive_requests 1000;
    reset_timedout_connection on;
    limit_conn_zone $binary_remote_addr zone=mmpc_per_address:1m;
    limit_conn mmpc_per_address {per_address};
    limit_conn_status 429;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto https;
    proxy_connect_timeout 5s;
    proxy_send_timeout {read_s}s;
    proxy_read_timeout {read_s}s;
    proxy_request_buffering off;  # bodies stream to the model server: no temp files
    proxy_max_temp_file_size 0;
    proxy_next_upstream off;  # a prediction is never sent twice

    include {secrets}/auth.conf;
    include {upstream};

    # A POST's body must be JSON: the model server answers 500 to a body without Content-Type, and
    # decodes CSV and Parquet before mmpc's request limits run (docs/robustness.md, "Layers").
    map "$request_method $content_type" $mmpc_not_json {{
        default 0;
        "~*^POST (?!application/json\\s*(;|$))" 1;
    }}

    server {{
        listen {listen}:{port} ssl;
        server_name localhost;
        ssl_certificate {tls}/server.pem;
        ssl_certificate_key {tls}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:mmpc_tls:1m;

        add_header X-Mmpc-Model-Version $mmpc_model_version always;
        error_page 502 503 504 = @unavailable;

        location = /health {{
            proxy_pass http://mmpc_model/ping;
        }}
        location / {{
            if ($mmpc_authorized = 0) {{
                add_header WWW-Authenticate 'Bearer realm="mmpc"' always;
                return 401 '{{"error": "unauthorized: send Authorization: Bearer <token>"}}\\n';
            }}
            if ($mmpc_not_json) {{
                return 415 '{{"error": "send the body as JSON, with Content-Type: application/json"}}\\n';
            }}
            proxy_pass http://mmpc_model;
        }}
        location @unavailable {{
            return 503 '{{"error": "no model server answering", "model_version": "$mmpc_model_version"}}\\n';
        }}
    }}
}}
"""


def render(layout: Layout, listen: str, port: int) -> str:
    return _CONF.format(
        user=_user_line(),
        drain_s=DRAIN_TIMEOUT_S,
        run=layout.run,
        logs=layout.logs,
        tmp=layout.root / "nginx-temp",
        max_body=MAX_BODY,
        header_s=CLIENT_HEADER_TIMEOUT_S,
        body_s=CLIENT_BODY_TIMEOUT_S,
        send_s=SEND_TIMEOUT_S,
        keepalive_s=KEEPALIVE_TIMEOUT_S,
        per_address=CONNECTIONS_PER_ADDRESS,
        read_s=READ_TIMEOUT_S,
        secrets=layout.secrets,
        upstream=layout.upstream_conf,
        listen=listen,
        port=port,
        tls=layout.tls,
    )


@dataclass(frozen=True)
class Upstream:
    """The model server nginx sends requests to, and the version it states in every response."""

    version: str
    port: int | None  # None: no model server yet (503)


def upstream_text(up: Upstream) -> str:
    server = f"{processes.HOST}:{up.port}" if up.port else f"{processes.HOST}:9 down"
    return (
        "# written by infra.serving at each rollout: the model server and the version it serves\n"
        "upstream mmpc_model {\n"
        f"    server {server};\n"
        "    keepalive 16;\n"
        f"    keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;\n"
        "}\n"
        "map $host $mmpc_model_version {\n"
        f'    default "{up.version}";\n'
        "}\n"
    )


def read_upstream(layout: Layout) -> str | None:
    return layout.upstream_conf.read_text() if layout.upstream_conf.is_file() else None


def write_config(layout: Layout, listen: str, port: int) -> None:
    write_atomic(layout.nginx_conf, render(layout, listen, port))
    if not layout.upstream_conf.is_file():
        write_atomic(layout.upstream_conf, upstream_text(Upstream("none", None)))


def check(layout: Layout) -> None:
    """``nginx -t`` of the files as they are now; raises with nginx's own message. Without an nginx
    binary here (nginx in a container of its own), the reload checks them: a master refusing the new
    files keeps its old workers, and ``reload`` fails waiting for new ones."""
    try:
        nginx = binary()
    except FileNotFoundError as exc:
        if master_pid(layout) is None:
            raise
        log.warning("%s: the reload checks the configuration", exc)
        return
    argv = [nginx, "-p", str(layout.root), "-c", str(layout.nginx_conf), "-t", "-q"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise processes.ServiceError(f"nginx -t refused the configuration: {done.stderr.strip()}")


def master_pid(layout: Layout) -> int | None:
    return processes.read_pid(layout.run / "nginx.pid", "nginx")


def start(layout: Layout, port: int, timeout: float = 30) -> int:
    """nginx's master in the foreground of its own session; returns its pid once the port answers."""
    check(layout)
    argv = [binary(), "-p", str(layout.root), "-c", str(layout.nginx_conf), "-g", "daemon off;"]
    log = layout.logs / "nginx.out"
    pid = processes.start(
        argv, env=dict(os.environ), log_file=log, pid_file=layout.run / "nginx.pid", cwd=layout.root
    )
    processes.wait_until(
        lambda: processes.port_open(port), what="nginx", timeout=timeout, log_file=log, pid=pid
    )
    return pid


def workers(master: int) -> set[int]:
    """The live worker processes of an nginx master (its children)."""
    return processes.children(master)


def reload(layout: Layout, timeout: float = 30) -> set[int]:
    """Gracefully reload: new workers take new connections with the new files, old ones finish what
    they have in flight. Returns the old workers (see ``wait_drained``)."""
    master = master_pid(layout)
    if master is None:
        raise processes.ServiceError(f"nginx is not running (no live pid in {layout.run / 'nginx.pid'})")
    old = workers(master)
    os.kill(master, signal.SIGHUP)
    processes.wait_until(
        lambda: bool(workers(master) - old),
        what="nginx reload",
        timeout=timeout,
        log_file=layout.logs / "nginx-error.log",
        pid=master,
    )
    return old


def wait_drained(old_workers: set[int], timeout: float = DRAIN_TIMEOUT_S) -> bool:
    """Until the old workers have answered their last request and exited; False on timeout."""
    try:
        processes.wait_until(
            lambda: not any(processes.alive(p) for p in old_workers),
            what="old nginx workers",
            timeout=timeout,
            log_file=Path("/dev/null"),
        )
    except processes.ServiceError:
        return False
    return True


def stop(layout: Layout, grace: float = 10) -> bool:
    master = master_pid(layout)
    if master is None:
        return False
    processes.stop(master, grace)
    return True
