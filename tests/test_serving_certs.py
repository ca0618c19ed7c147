"""The proxy's certificate: made by a private CA for loopback and the names a team reaches it by,
made again by the same CA when those names change, a team's own certificate left alone."""

from __future__ import annotations

import pytest
from cryptography import x509

from infra.serving import certs
from infra.serving.layout import Layout


def _names(layout: Layout) -> set[str]:
    cert = x509.load_pem_x509_certificate((layout.tls / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)}


def test_names_from_the_environment_reissue_by_the_same_ca(tmp_path, monkeypatch):
    layout = Layout(tmp_path)
    layout.make()
    monkeypatch.delenv(certs.NAMES_ENV, raising=False)
    assert certs.ensure_certs(layout) and _names(layout) == {"localhost", "127.0.0.1"}
    ca = layout.ca_pem.read_bytes()
    assert not certs.ensure_certs(layout)  # nothing changed: nothing made
    monkeypatch.setenv(certs.NAMES_ENV, "scoring.example.com, 10.0.0.7")
    assert certs.ensure_certs(layout)
    assert _names(layout) == {"localhost", "127.0.0.1", "scoring.example.com", "10.0.0.7"}
    assert layout.ca_pem.read_bytes() == ca  # clients keep trusting the same ca.pem
    assert oct((layout.tls / "server.key").stat().st_mode & 0o777) == "0o600"


def test_a_bad_name_is_refused_and_a_teams_own_certificate_is_kept(tmp_path, monkeypatch):
    layout = Layout(tmp_path)
    layout.make()
    monkeypatch.setenv(certs.NAMES_ENV, "scoring.example.com,not a host")
    with pytest.raises(ValueError, match="'not a host' is neither a host name nor an IP address"):
        certs.ensure_certs(layout)
    monkeypatch.delenv(certs.NAMES_ENV)
    certs.ensure_certs(layout)
    other = Layout(tmp_path / "other")
    other.make()
    certs.ensure_certs(other)  # a certificate from another CA stands for a team's own
    (layout.tls / "server.pem").write_bytes((other.tls / "server.pem").read_bytes())
    monkeypatch.setenv(certs.NAMES_ENV, "scoring.example.com")
    assert not certs.ensure_certs(layout)
    assert (layout.tls / "server.pem").read_bytes() == (other.tls / "server.pem").read_bytes()
