"""Bearer tokens: settings, the token store (files read again on change, constant-time match)
and the interceptor that refuses calls without an accepted token (in-process grpc.aio server)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.api.auth import TokenAuthInterceptor, bearer_token
from sidecar.api.status import ErrorMappingInterceptor
from sidecar.api.tokens import ENVIRONMENT, TokenStore
from sidecar.cli import _parser
from sidecar.clock import ManualClock
from sidecar.config import load_settings
from sidecar.errors import ConfigError
from sidecar.observability.logging import configure_logging

TOKEN = "tok-" + "a1b2c3d4e5f6a7b8c9d0"
OTHER = "tok-" + "ffffeeeeddddccccbbbb"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FERRY_"):
            monkeypatch.delenv(name)


def _later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# -- settings ----------------------------------------------------------------------------------


def test_token_files_repeat_or_separate_with_commas(tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["serve", "--token-file", "/a", "--token-file", "/b,/c", "--reflection=false"]
    )
    s = load_settings(token_file=args.token_file, reflection=args.reflection)
    assert s.token_file == (Path("/a"), Path("/b"), Path("/c"))
    assert s.reflection is False
    assert s.token_auth


def test_bool_flags_take_an_optional_value() -> None:
    parser = _parser()
    assert parser.parse_args(["serve", "--insecure-bind-all"]).insecure_bind_all == "true"
    assert parser.parse_args(["serve", "--reflection", "false"]).reflection == "false"
    assert parser.parse_args(["serve"]).reflection is None
    assert load_settings().reflection is True


def test_tokens_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TOKENS", f" {TOKEN} ,{OTHER},")
    monkeypatch.setenv("FERRY_TOKEN_FILE", "/etc/ferry/a,/etc/ferry/b")
    monkeypatch.setenv("FERRY_REFLECTION", "false")
    s = load_settings()
    assert [t.get_secret_value() for t in s.tokens] == [TOKEN, OTHER]
    assert s.token_file == (Path("/etc/ferry/a"), Path("/etc/ferry/b"))
    assert s.reflection is False
    for shown in (str(s), repr(s), str(s.describe()), s.model_dump_json()):
        assert TOKEN not in shown
        assert OTHER not in shown
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--tokens", TOKEN])


def test_short_tokens_are_refused_without_showing_them() -> None:
    with pytest.raises(ConfigError, match="at least 16") as info:
        load_settings(tokens="short-secret")
    assert "short-secret" not in str(info.value)


def test_tokens_are_off_by_default() -> None:
    assert not load_settings().token_auth


# -- token store -------------------------------------------------------------------------------


def test_match_tells_the_source_and_hash(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# orders\n{TOKEN}\n\n")
    store = TokenStore([file], [OTHER])
    assert store.count() == 2
    match = store.match(TOKEN)
    assert match is not None
    assert match.source == str(file)
    assert match.sha256 == hashlib.sha256(TOKEN.encode()).hexdigest()
    env = store.match(OTHER)
    assert env is not None
    assert env.source == ENVIRONMENT
    assert store.match(TOKEN[:-1]) is None
    assert store.match(TOKEN + "x") is None
    assert store.match("") is None
    assert store.match(None) is None
    assert TOKEN not in repr(store)
    assert TOKEN not in repr(match)


def test_files_are_read_again_at_most_once_per_interval(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(TOKEN + "\n")
    clock = ManualClock()
    store = TokenStore([file], clock=clock, check_interval_s=1.0)
    file.write_text(OTHER + "\n")  # rotated: the old token goes, a new one comes
    _later(file)
    clock.advance(0.5)
    assert store.match(TOKEN) is not None  # not checked yet
    clock.advance(0.6)
    assert store.match(TOKEN) is None
    assert store.match(OTHER) is not None


def test_an_unreadable_file_keeps_its_tokens_and_an_empty_one_revokes(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(TOKEN + "\n")
    clock = ManualClock()
    store = TokenStore([file], clock=clock)
    file.write_bytes(b"\xff\xfe not text")
    _later(file)
    clock.advance(2)
    assert store.match(TOKEN) is not None
    file.unlink()
    clock.advance(2)
    assert store.match(TOKEN) is not None
    file.write_text("")
    clock.advance(2)
    assert store.match(TOKEN) is None


def test_short_tokens_in_a_file_are_skipped(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"tiny\n{TOKEN}\n")
    store = TokenStore([file])
    assert store.count() == 1
    assert store.match("tiny") is None


def test_a_missing_token_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_file"):
        TokenStore([tmp_path / "nope"])


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", f"Bearer {TOKEN}"),), TOKEN),
        ((("authorization", f"bearer  {TOKEN} "),), TOKEN),
        ((("x-other", "1"), ("authorization", f"Bearer {TOKEN}")), TOKEN),
        ((("authorization", f"Basic {TOKEN}"),), None),
        ((("authorization", "Bearer "),), None),
        ((("authorization", TOKEN),), None),
        ((), None),
        (None, None),
    ],
)
def test_bearer_token(metadata: tuple[tuple[str, str], ...] | None, token: str | None) -> None:
    assert bearer_token(metadata) == token


# -- the interceptor, on a real in-process server ----------------------------------------------


async def _echo(request: bytes, _context: object) -> bytes:
    return request


async def _echo_stream(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, io.StringIO]]:
    log = io.StringIO()
    configure_logging("debug", log)
    file = tmp_path / "tokens"
    file.write_text(TOKEN + "\n")
    server = grpc.aio.server(
        interceptors=[TokenAuthInterceptor(TokenStore([file])), ErrorMappingInterceptor()]
    )
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.stream_stream_rpc_method_handler(_echo_stream),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("ferry.test.Echo", handlers),)
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", log
    finally:
        await server.stop(None)
        configure_logging()


async def _write_and_read(call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
    await call.write(b"x")
    await call.read()


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no status details")


@pytest.mark.parametrize("presented", [None, OTHER, TOKEN[:-1], "Basic"])
async def test_calls_without_an_accepted_token_are_unauthenticated(
    server: tuple[str, io.StringIO], presented: str | None
) -> None:
    address, log = server
    metadata = () if presented is None else (("authorization", f"Bearer {presented}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await channel.unary_unary("/ferry.test.Echo/Echo")(b"x", metadata=metadata, timeout=5)
        call = channel.stream_stream("/ferry.test.Echo/Stream")(metadata=metadata, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await _write_and_read(call)
    for error in (unary.value, stream.value):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "missing or invalid credentials"
        status = _status(error)
        assert status.code == code_pb2.UNAUTHENTICATED
        [detail] = status.details
        info = error_details_pb2.ErrorInfo()
        detail.Unpack(info)
        assert (info.reason, info.domain) == ("UNAUTHENTICATED", "ferry.v1")
    assert '"call_refused"' in log.getvalue()
    if presented:
        assert presented not in log.getvalue()


async def test_an_accepted_token_passes_and_is_never_logged(
    server: tuple[str, io.StringIO],
) -> None:
    address, log = server
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        assert (
            await channel.unary_unary("/ferry.test.Echo/Echo")(b"hi", metadata=metadata, timeout=5)
            == b"hi"
        )
        call = channel.stream_stream("/ferry.test.Echo/Stream")(metadata=metadata, timeout=5)
        await call.write(b"one")
        assert await call.read() == b"one"
        await call.done_writing()
    assert TOKEN not in log.getvalue()


async def test_health_needs_no_token(server: tuple[str, io.StringIO]) -> None:
    address, _ = server
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
