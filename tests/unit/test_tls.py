"""TLS settings and the certificate files read again when they change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog

from sidecar.api.tls import ReloadingCertificates, TlsFiles
from sidecar.config import load_settings
from sidecar.errors import ConfigError
from testkit.certs import CertificateAuthority


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Ferry Test CA")


@pytest.fixture
def files(ca: CertificateAuthority, tmp_path: Path) -> TlsFiles:
    cert, key = ca.issue_server().write(tmp_path, "server")
    return TlsFiles(cert, key, ca.write(tmp_path, "clients-ca"))


def _touch_later(path: Path) -> None:
    """Move the file's mtime on, so that a rewrite within one clock tick is still seen."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_tls_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        load_settings(tls_cert="/c.pem")
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        load_settings(tls_key="/k.pem")
    with pytest.raises(ConfigError, match="tls_client_ca needs"):
        load_settings(tls_client_ca="/ca.pem")
    s = load_settings(tls_cert="/c.pem", tls_key="/k.pem", tls_client_ca="/ca.pem")
    assert s.tls_cert == Path("/c.pem")


def test_tls_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TLS_CERT", "/etc/ferry/tls/tls.crt")
    monkeypatch.setenv("FERRY_TLS_KEY", "/etc/ferry/tls/tls.key")
    monkeypatch.setenv("FERRY_TLS_CLIENT_CA", "/etc/ferry/tls/ca.crt")
    s = load_settings()
    assert (s.tls_cert, s.tls_key, s.tls_client_ca) == (
        Path("/etc/ferry/tls/tls.crt"),
        Path("/etc/ferry/tls/tls.key"),
        Path("/etc/ferry/tls/ca.crt"),
    )


def test_non_loopback_listen_is_allowed_with_tls() -> None:
    s = load_settings(listen="0.0.0.0:50051", tls_cert="/c.pem", tls_key="/k.pem")
    assert s.insecure_bind_all is False
    with pytest.raises(ConfigError, match="configure TLS"):
        load_settings(listen="0.0.0.0:50051")


def test_unchanged_files_keep_the_configuration(files: TlsFiles) -> None:
    certs = ReloadingCertificates(files)
    certs.credentials()
    assert certs.fetch() is None
    assert certs.fetch() is None


def test_a_changed_certificate_is_loaded(
    files: TlsFiles, tmp_path: Path, ca: CertificateAuthority
) -> None:
    certs = ReloadingCertificates(files)
    other = CertificateAuthority.create("Other CA").issue_server()
    other.write(tmp_path, "server")
    _touch_later(files.cert)
    _touch_later(files.key)
    with structlog.testing.capture_logs() as logs:
        assert certs.fetch() is not None
    assert [e["event"] for e in logs] == ["tls_certificates_reloaded"]
    assert other.key_pem.decode() not in str(logs)
    assert certs.fetch() is None  # loaded once


def test_the_client_ca_is_reloaded_too(files: TlsFiles, tmp_path: Path) -> None:
    certs = ReloadingCertificates(files)
    assert files.client_ca is not None
    CertificateAuthority.create("Next CA").write(tmp_path, "clients-ca")
    _touch_later(files.client_ca)
    assert certs.fetch() is not None


def test_rewritten_with_the_same_contents_is_no_change(files: TlsFiles) -> None:
    certs = ReloadingCertificates(files)
    files.cert.write_bytes(files.cert.read_bytes())
    _touch_later(files.cert)
    assert certs.fetch() is None


def test_broken_files_keep_the_last_certificate_until_they_change(files: TlsFiles) -> None:
    certs = ReloadingCertificates(files)
    good = files.key.read_bytes()
    files.key.write_bytes(b"half written")
    _touch_later(files.key)
    with structlog.testing.capture_logs() as logs:
        assert certs.fetch() is None
        assert certs.fetch() is None  # the same broken files: not read, not logged again
    assert [e["event"] for e in logs] == ["tls_files_not_loaded"]
    assert "half written" not in str(logs)
    files.key.write_bytes(good)
    _touch_later(files.key)
    assert certs.fetch() is None  # back to what is in use: nothing to hand over


def test_a_missing_file_during_rotation_keeps_the_last(files: TlsFiles) -> None:
    certs = ReloadingCertificates(files)
    files.cert.unlink()
    assert certs.fetch() is None


@pytest.mark.parametrize(
    ("which", "setting"), [("cert", "tls_cert"), ("key", "tls_key"), ("client_ca", "tls_client_ca")]
)
def test_unusable_files_stop_the_start(files: TlsFiles, which: str, setting: str) -> None:
    path = getattr(files, which)
    path.write_bytes(b"not pem")
    with pytest.raises(ConfigError, match=setting) as info:
        ReloadingCertificates(files)
    assert "not pem" not in str(info.value)


def test_an_unreadable_file_stops_the_start(files: TlsFiles, tmp_path: Path) -> None:
    missing = TlsFiles(tmp_path / "nope.crt", files.key)
    with pytest.raises(ConfigError, match=r"nope\.crt"):
        ReloadingCertificates(missing)
