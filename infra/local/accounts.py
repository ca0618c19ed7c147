"""The MLflow server's accounts (its basic-auth app): the auth configuration it starts with, and the
``training`` and ``reader`` accounts an admin creates once the server answers.

``training`` is an ordinary user: the experiments and registered models it creates give it MANAGE,
so it logs runs and registers versions there. ``reader`` only reads (the server's
``default_permission = READ``). Passwords travel in request bodies and the ``Authorization``
header, never in a URL, a command line or a log line.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from infra.local.processes import ServiceError

ADMIN = "admin"
ACCOUNTS = ("training", "reader")

# The REST endpoints of MLflow's auth app (mlflow.server.auth.routes), as AuthServiceClient calls them.
_CURRENT_USER = "/api/2.0/mlflow/users/current"
_GET_USER = "/api/2.0/mlflow/users/get"
_CREATE_USER = "/api/2.0/mlflow/users/create"
_UPDATE_PASSWORD = "/api/2.0/mlflow/users/update-password"
_TIMEOUT = (5, 60)


def auth_ini(database: Path, admin_password: str) -> str:
    """The server's auth configuration (MLFLOW_AUTH_CONFIG_PATH); it holds the admin's password."""
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{database}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Every request checks its password hash (scrypt, ~0.15 s of CPU): a training sends hundreds.
        # With the server's one worker the cache is never stale: password changes go through it.
        "auth_cache_ttl_seconds = 300\n"
    )


def authenticates(url: str, username: str, password: str) -> bool:
    """Whether the server knows this account with this password."""
    resp = requests.get(url + _CURRENT_USER, auth=(username, password), timeout=_TIMEOUT)
    if resp.status_code == 404:
        raise ServiceError(
            f"mlflow at {url} runs without authentication (started before accounts were set up): "
            "stop it with `python -m infra.local stop mlflow` and run `up` again"
        )
    return resp.status_code == 200


def ensure_accounts(url: str, admin_password: str, passwords: dict[str, str]) -> list[str]:
    """Create or re-password each account that does not log in yet; returns those changed."""
    if not authenticates(url, ADMIN, admin_password):
        raise ServiceError(
            f"mlflow at {url}: the admin password in secrets/secrets.json is refused by the "
            "server's auth database (mlflow/basic_auth.db)"
        )
    changed = []
    for name, password in passwords.items():
        if authenticates(url, name, password):
            continue
        admin = (ADMIN, admin_password)
        known = requests.get(url + _GET_USER, params={"username": name}, auth=admin, timeout=_TIMEOUT)
        if known.status_code == 200:
            body, path, method = {"username": name, "password": password}, _UPDATE_PASSWORD, "PATCH"
        else:
            body, path, method = {"username": name, "password": password}, _CREATE_USER, "POST"
        resp = requests.request(method, url + path, json=body, auth=admin, timeout=_TIMEOUT)
        if resp.status_code != 200:
            # the body names the problem (a password policy, a taken name); it holds no password
            raise ServiceError(f"mlflow at {url}: setting up account {name!r} failed: {resp.text[:300]}")
        changed.append(name)
    return changed


def ensure_from_env(url: str) -> list[str]:
    """The accounts of a server started elsewhere (compose's one-shot), with the passwords in
    MLFLOW_ADMIN_PASSWORD, MLFLOW_TRAINING_PASSWORD and MLFLOW_READER_PASSWORD."""
    names = {"admin": "MLFLOW_ADMIN_PASSWORD", **{a: f"MLFLOW_{a.upper()}_PASSWORD" for a in ACCOUNTS}}
    missing = [var for var in names.values() if not os.environ.get(var)]
    if missing:
        raise ServiceError(f"set {', '.join(missing)} in the environment")
    try:
        return ensure_accounts(
            url.rstrip("/"), os.environ[names["admin"]], {a: os.environ[names[a]] for a in ACCOUNTS}
        )
    except requests.RequestException as exc:
        raise ServiceError(f"mlflow at {url}: {type(exc).__name__}: {exc}") from None
