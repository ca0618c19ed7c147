"""The bearer token every request to the proxy carries: taken from ``MMPC_SERVING_TOKEN`` or made at
the first ``up``; kept in ``secrets/token`` (0600) and in the nginx include that checks it."""

from __future__ import annotations

import os
import re
import secrets

from infra.serving.layout import Layout, write_private

TOKEN_ENV = "MMPC_SERVING_TOKEN"
# RFC 6750's token68 characters only: nothing that could end the nginx string it is written into
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{16,512}=*")


def ensure_token(layout: Layout) -> str:
    """The token from the environment (replacing a stored one), else the stored one, else a new one."""
    given = os.environ.get(TOKEN_ENV)
    if given is not None:
        if not _TOKEN.fullmatch(given):
            raise ValueError(
                f"{TOKEN_ENV} must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / - (then any '=')"
            )
        token = given
    elif layout.token_file.is_file():
        token = layout.token_file.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
    if not layout.token_file.is_file() or layout.token_file.read_text().strip() != token:
        write_private(layout.token_file, token.encode() + b"\n")
    write_private(layout.secrets / "auth.conf", _auth_map(token).encode())
    return token


def _auth_map(token: str) -> str:
    # A case-sensitive regex: nginx compares a map's plain strings ignoring case. Every character that
    # is not a letter or digit is escaped, so the token reads as itself.
    escaped = "".join(c if c.isalnum() else "\\" + c for c in token)
    return (
        "# the bearer token nginx accepts; written by infra.serving, readable only by its owner\n"
        "map $http_authorization $mmpc_authorized {\n"
        "    default 0;\n"
        f'    "~^Bearer {escaped}$" 1;\n'
        "}\n"
    )


def read_token(layout: Layout) -> str:
    if not layout.token_file.is_file():
        raise FileNotFoundError(f"no token under {layout.secrets}: run `up` first")
    return layout.token_file.read_text().strip()
