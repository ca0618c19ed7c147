"""The proxy's TLS: a private CA made at the first ``up`` and a server certificate it signs for
127.0.0.1, localhost and the names in ``MMPC_SERVING_NAMES``. Clients verify against ``ca.pem``; the
keys stay in a 0700 folder, 0600. A team's own certificate can replace ``tls/server.pem`` (the chain)
and ``tls/server.key``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.serving.layout import Layout, write_private

NAMES_ENV = "MMPC_SERVING_NAMES"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}")
CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity clients (browsers, macOS) accept for a server certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mmpc serving"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a client clock slightly behind
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("mmpc serving CA")
    cert = (
        _builder(name, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server_names() -> list[str]:
    """The names clients reach the proxy by: localhost, 127.0.0.1 and ``MMPC_SERVING_NAMES`` (a comma
    separated list of host names and IP addresses, e.g. ``scoring.example.com,10.0.0.7``)."""
    extra = [n.strip() for n in os.environ.get(NAMES_ENV, "").split(",") if n.strip()]
    for name in extra:
        if not _HOST.fullmatch(name) and not _is_ip(name):
            raise ValueError(f"{NAMES_ENV}: {name!r} is neither a host name nor an IP address")
    return list(dict.fromkeys(["localhost", "127.0.0.1", *extra]))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _make_server(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, names: list[str]):
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    )
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(_name("localhost"), ca.subject, key.public_key(), SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _current_names(server_pem: Path, ca: x509.Certificate) -> list[str] | None:
    """The names the server certificate carries; None for a certificate another CA issued (a team's
    own, left as it is)."""
    cert = x509.load_pem_x509_certificate(server_pem.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return None
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)]


def _stored_ca(layout: Layout) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    ca_key_file = layout.tls / "ca.key"
    if not (layout.ca_pem.is_file() and ca_key_file.is_file()):
        return None
    key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(layout.ca_pem.read_bytes())  # type: ignore[return-value]


def ensure_certs(layout: Layout) -> bool:
    """The CA (made once) and a server certificate for ``server_names()``: made again, by the same CA,
    when the names change, so clients keep trusting ``ca.pem``. True when a certificate was made now."""
    server_pem, server_key = layout.tls / "server.pem", layout.tls / "server.key"
    names, stored = server_names(), _stored_ca(layout)
    if stored and server_pem.is_file() and server_key.is_file():
        current = _current_names(server_pem, stored[1])
        if current is None or sorted(current) == sorted(names):
            return False
    ca_key, ca = stored or _make_ca()
    key, cert = _make_server(ca_key, ca, names)
    write_private(layout.tls / "ca.key", _key_pem(ca_key))
    write_private(server_key, _key_pem(key))
    pem = serialization.Encoding.PEM
    # nginx sends the whole file: the server certificate, then the CA that signed it
    server_pem.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    layout.ca_pem.write_bytes(ca.public_bytes(pem))
    return True
