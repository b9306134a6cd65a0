"""Credentials: what the FERRY_TLS_* and FERRY_TOKEN_FILE variables and token files say, and
the channel credentials that follow (no process, no network)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ferry_client import TLS, Credentials
from ferry_client.credentials import channel_credentials, read_token_file, tls_options


def test_from_env_reads_tls_and_the_first_token_of_the_first_file(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("# the orders service\n\n  s3cret-1  \nlater-token\n")
    second.write_text("other\n")
    credentials = Credentials.from_env(
        {
            "FERRY_TLS_CA": "/tls/ca.pem",
            "FERRY_TLS_CLIENT_CERT": "/tls/client.pem",
            "FERRY_TLS_CLIENT_KEY": "/tls/client-key.pem",
            "FERRY_TLS_SERVER_NAME": "ferry.internal",
            "FERRY_TOKEN_FILE": f"{first}, {second}",
        }
    )
    assert credentials.tls == TLS(
        "/tls/ca.pem", "/tls/client.pem", "/tls/client-key.pem", "ferry.internal"
    )
    assert credentials.token == "s3cret-1"
    assert tls_options(credentials) == [("grpc.ssl_target_name_override", "ferry.internal")]


def test_from_env_without_variables_is_plaintext_without_a_token() -> None:
    credentials = Credentials.from_env({})
    assert credentials == Credentials()
    assert channel_credentials("127.0.0.1:50051", credentials) is None
    assert tls_options(credentials) == []


def test_client_certificate_variables_without_a_ca_leave_tls_off() -> None:
    assert (
        Credentials.from_env({"FERRY_TLS_CLIENT_CERT": "c", "FERRY_TLS_CLIENT_KEY": "k"}).tls
        is None
    )


def test_a_token_file_without_a_token_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="holds no token"):
        read_token_file(empty)


def test_a_certificate_without_its_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        TLS(ca_file="ca.pem", cert_file="client.pem")


def test_the_token_stays_out_of_the_repr() -> None:
    assert "s3cret" not in repr(Credentials(token="s3cret"))


def test_a_token_without_tls_uses_local_credentials() -> None:
    credentials = Credentials(token="s3cret")
    for addr in ("127.0.0.1:50051", "unix:///run/ferry.sock"):
        assert isinstance(channel_credentials(addr, credentials), grpc.ChannelCredentials)


def test_tls_reads_the_pem_files(tmp_path: Path) -> None:
    missing = TLS(ca_file=str(tmp_path / "absent.pem"))
    with pytest.raises(FileNotFoundError):
        channel_credentials("ferry:50051", Credentials(tls=missing))
