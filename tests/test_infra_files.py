"""The container recipes, read as data: Docker does not run here, so compose.yaml, the Dockerfile,
.env.example and the GPU work-pool templates are checked for what they promise (secrets only from
the environment, loopback ports by default, a GPU for the worker, the same server settings as
infra/local), and the templates are rendered the way a Prefect worker renders them."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from servers import REPO

INFRA = REPO / "infra"
COMPOSE = yaml.safe_load((INFRA / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "MC_HOST", "AUTH_STRING", "TOKEN")


def _env(service: str) -> dict[str, str]:
    env = dict(SERVICES[service].get("environment") or {})
    env.pop("<<", None)
    return {k: str(v) for k, v in env.items()}


def test_compose_has_the_whole_topology():
    assert {
        "postgres", "minio", "minio-init", "mlflow", "mlflow-accounts", "prefect-server", "prefect-worker",
        "serve", "proxy",
    } <= set(SERVICES)  # fmt: skip
    assert SERVICES["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_secrets_come_only_from_the_environment():
    required = set()
    for name, service in SERVICES.items():
        for key, value in _env(name).items():
            if any(word in key for word in SECRET_WORDS):
                match = re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]+\}", value)
                assert match, f"{name}.{key} must be ${{VAR:?...}} from the environment, not {value!r}"
                required.add(match.group(1))
        for arg in service.get("command") or []:
            assert not re.search(r"password|secret|://[^@/\s]+:[^@/\s]+@", str(arg), re.I), (name, arg)
    example = dict(
        line.split("=", 1)
        for line in (INFRA / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    assert all(example[v].startswith("change-me") for v in required)
    assert "infra/.env" in (REPO / ".gitignore").read_text().split()


def test_published_ports_bind_loopback_by_default():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("${MMPC_BIND:-127.0.0.1}:"), (name, port)


def test_mlflow_server_uses_postgres_and_proxies_s3_artifacts():
    command = SERVICES["mlflow"]["command"]
    assert "--backend-store-uri=postgresql://mlflow@postgres:5432/mlflow" in command
    assert (
        any(c.startswith("--artifacts-destination=s3://") for c in command) and "--serve-artifacts" in command
    )
    assert _env("mlflow")["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    prefect = _env("prefect-server")
    assert prefect["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert prefect["PREFECT_SERVER_DATABASE_HOST"] == "postgres"


def test_worker_reserves_a_gpu():
    devices = SERVICES["prefect-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "--pool" in SERVICES["prefect-worker"]["command"]


def test_scoring_goes_through_nginx_with_tls_and_follows_the_champion():
    serve, proxy = SERVICES["serve"], SERVICES["proxy"]
    script = " ".join(serve["command"])
    assert "python -m infra.serving --root /srv/serving prepare" in script and "infra.serving" in script
    assert script.rstrip().endswith("watch")  # the controller: rolls each new @champion out
    assert _env("serve")["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert _env("serve")["MLFLOW_TRACKING_USERNAME"] == "reader"  # serving only reads the registry
    assert not [k for k in _env("serve") if k.startswith("AWS_")]  # artifacts come through the server
    # nginx's official image shares the controller's network and pids: it alone publishes a port
    # (8443, TLS), reaches the loopback model servers, and takes the controller's SIGHUP
    assert proxy["image"].startswith("nginx:") and "ports" not in proxy
    assert proxy["network_mode"] == "service:serve" and proxy["pid"] == "service:serve"
    assert [p.rsplit(":", 1)[1] for p in serve["ports"]] == ["8443"]
    assert "nginx -p /srv/serving -c /srv/serving/nginx.conf" in " ".join(proxy["command"])
    assert {"serving:/srv/serving"} <= set(serve["volumes"]) & set(proxy["volumes"])


def test_servers_require_credentials_and_clients_bring_them():
    mlflow = _env("mlflow")
    assert "--app-name=basic-auth" in SERVICES["mlflow"]["command"]
    assert mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert mlflow["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${")
    ini = (INFRA / "mlflow" / "basic_auth.ini").read_text()
    assert "default_permission = READ" in ini  # the admin's password: MLFLOW_AUTH_ADMIN_PASSWORD only
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M) and "@postgres" in ini and ":@" not in ini
    mount = SERVICES["mlflow"]["volumes"][0].split(":")
    assert mount[1] == mlflow["MLFLOW_AUTH_CONFIG_PATH"] and (INFRA / mount[0]).resolve() == (
        INFRA / "mlflow" / "basic_auth.ini"
    )
    assert "mlflow_auth" in (INFRA / "postgres" / "init-databases.sh").read_text()
    assert _env("prefect-server")["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING:?")
    worker = _env("prefect-worker")
    assert worker["PREFECT_API_AUTH_STRING"] == _env("prefect-server")["PREFECT_SERVER_API_AUTH_STRING"]
    assert worker["MLFLOW_TRACKING_USERNAME"] == "training" and "PREFECT_API_KEY" not in worker
    accounts = _env("mlflow-accounts")
    assert {"MLFLOW_ADMIN_PASSWORD", "MLFLOW_TRAINING_PASSWORD", "MLFLOW_READER_PASSWORD"} <= set(accounts)


def test_dockerfile_targets_exist_and_pin_pyprojects_mlflow():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    for service in SERVICES.values():
        if "build" in service:
            assert service["build"]["target"] in targets
            assert (
                REPO / "infra" / service["build"]["context"] / service["build"]["dockerfile"]
            ).resolve() == (INFRA / "docker" / "Dockerfile")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {Requirement(d).name: Requirement(d).specifier for d in deps}
    quoted = re.findall(r'"([A-Za-z0-9_.-]+(?:\[[a-z,]+\])?[<>=!~][^"]*)"', dockerfile)  # name[extras]==pin
    installed = [Requirement(r) for r in quoted]
    assert {r.name for r in installed} == {"mlflow", "psycopg2-binary", "boto3"}
    for req in installed:
        assert req.specifier == pins[req.name], req.name
    for script in ("postgres/init-databases.sh", "minio/init-bucket.sh"):
        assert (INFRA / script).stat().st_mode & 0o111, f"{script} is not executable"


def _render(kind: str, values: dict) -> dict:
    """What a Prefect worker does with a work pool's template: defaults, values, placeholders."""
    from prefect.utilities.templating import apply_values

    template = json.loads((INFRA / "workpools" / f"gpu-{kind}.json").read_text())
    props = template["variables"]["properties"]
    variables = {k: v["default"] for k, v in props.items() if "default" in v} | values
    return apply_values(template["job_configuration"], variables)


@pytest.mark.parametrize("gpus", [1, 4])
def test_docker_work_pool_reserves_gpus(gpus):
    job = _render("docker", {"gpu_count": gpus, "image": "registry.example/mmpc:1"})
    kwargs = job["container_create_kwargs"]
    assert kwargs["device_requests"] == [{"driver": "nvidia", "count": gpus, "capabilities": [["gpu"]]}]
    assert kwargs["shm_size"] == "16g" and job["image"] == "registry.example/mmpc:1"
    assert job["networks"] == ["mmpc"] == [COMPOSE["networks"]["default"]["name"]]


def test_kubernetes_work_pool_requests_gpus_on_gpu_nodes():
    job = _render("kubernetes", {"gpu_count": 2, "node_selector": {"gpu": "h100"}})
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
