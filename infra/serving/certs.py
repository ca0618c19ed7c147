"""The proxy's TLS: a private CA made at the first ``up`` and a server certificate it signs for
127.0.0.1 and localhost. Clients verify against ``ca.pem``; the keys stay in a 0700 folder, 0600."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.serving.layout import Layout, write_private

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


def _make_server(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate):
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
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


def ensure_certs(layout: Layout) -> bool:
    """The CA and the server certificate, made once; True when made now."""
    server_pem, server_key = layout.tls / "server.pem", layout.tls / "server.key"
    if layout.ca_pem.is_file() and server_pem.is_file() and server_key.is_file():
        return False
    ca_key, ca = _make_ca()
    key, cert = _make_server(ca_key, ca)
    write_private(layout.tls / "ca.key", _key_pem(ca_key))
    write_private(server_key, _key_pem(key))
    pem = serialization.Encoding.PEM
    # nginx sends the whole file: the server certificate, then the CA that signed it
    server_pem.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    layout.ca_pem.write_bytes(ca.public_bytes(pem))
    return True
