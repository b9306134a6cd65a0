"""The accepted bearer tokens: from token files (read again when they change) and FERRY_TOKENS.

A token file holds one token per line; blank lines and lines starting with `#` are skipped,
as are tokens shorter than `MIN_TOKEN_LENGTH` (counted in the log, never shown). Files are
checked at most once per `check_interval_s` (a `stat` of each), and read again only when one
changed (inode, size or mtime): a Kubernetes Secret's files swapped, a token added or removed.
A file that cannot be read keeps its last tokens, so a rotation caught half-way locks nobody
out; emptying a file revokes its tokens.

A presented token is compared with every accepted one with `hmac.compare_digest`, so the time
a comparison takes says nothing about which token, or which part of it, was close. Token
values never reach a log line, an error message or a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from sidecar.clock import Clock, SystemClock
from sidecar.config import MIN_TOKEN_LENGTH
from sidecar.errors import ConfigError
from sidecar.observability.logging import register_secrets

log = structlog.get_logger(__name__)
CHECK_INTERVAL_S = 1.0
#: The source of tokens given in the environment rather than in a file.
ENVIRONMENT = "FERRY_TOKENS"

FileStamp = tuple[int, int, int] | None  # (inode, size, mtime_ns) of a readable file


@dataclass(frozen=True)
class TokenMatch:
    """Who presented an accepted token: where it came from, and its SHA-256 (hex)."""

    source: str  # a token file's path as configured, or ENVIRONMENT
    sha256: str


@dataclass(frozen=True)
class _Token:
    value: bytes = field(repr=False)
    source: str


@dataclass
class _File:
    path: Path
    stamp: FileStamp
    tokens: list[_Token]


class TokenStore:
    """The tokens of `files` and `environment`; `match` checks a presented one."""

    def __init__(
        self,
        files: Sequence[Path],
        environment: Iterable[str] = (),
        clock: Clock | None = None,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._clock = clock or SystemClock()
        self._interval = check_interval_s
        self._lock = threading.Lock()
        env = [_Token(t.encode(), ENVIRONMENT) for t in environment]
        register_secrets(t.value.decode() for t in env)
        self._environment = env
        self._files = []
        for path in files:
            stamp = _stamp(path)
            try:
                tokens = _read(path)
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"token_file: cannot read {path}: {_why(exc)}") from None
            self._files.append(_File(path, stamp, tokens))
        self._checked = self._clock.monotonic()
        self._tokens = self._all()
        if not self._tokens:
            log.warning("no_tokens_accepted", hint="every call but health is refused")

    def __repr__(self) -> str:
        return f"TokenStore(files={[str(f.path) for f in self._files]}, tokens=***)"

    def count(self) -> int:
        return len(self._tokens)

    def match(self, presented: str | None) -> TokenMatch | None:
        """The accepted token equal to `presented`, or None."""
        self._refresh()
        if not presented:
            return None
        candidate = presented.encode()
        found: _Token | None = None
        for token in self._tokens:  # every one, whatever matched: the time is the same
            if hmac.compare_digest(token.value, candidate) and found is None:
                found = token
        if found is None:
            return None
        return TokenMatch(found.source, hashlib.sha256(found.value).hexdigest())

    def _refresh(self) -> None:
        now = self._clock.monotonic()
        if now - self._checked < self._interval:
            return
        with self._lock:
            if now - self._checked < self._interval:
                return
            self._checked = now
            changed = False
            for file in self._files:
                stamp = _stamp(file.path)
                if stamp == file.stamp or stamp is None:
                    continue
                try:
                    file.tokens = _read(file.path)
                except (OSError, UnicodeDecodeError) as exc:
                    log.warning("token_file_unreadable", path=str(file.path), error=_why(exc))
                    continue
                file.stamp = stamp
                changed = True
                log.info("token_file_reloaded", path=str(file.path), tokens=len(file.tokens))
            if changed:
                self._tokens = self._all()

    def _all(self) -> list[_Token]:
        return [*self._environment, *(t for f in self._files for t in f.tokens)]


def _read(path: Path) -> list[_Token]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    values = [v for v in lines if v and not v.startswith("#")]
    short = [v for v in values if len(v) < MIN_TOKEN_LENGTH]
    if short:
        log.warning(
            "short_tokens_ignored",
            path=str(path),
            count=len(short),
            min_length=MIN_TOKEN_LENGTH,
        )
    accepted = [v for v in values if len(v) >= MIN_TOKEN_LENGTH]
    register_secrets(accepted)
    return [_Token(v.encode(), str(path)) for v in accepted]


def _why(error: OSError | UnicodeDecodeError) -> str:
    """What went wrong, without any of the file's content."""
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return error.strerror or type(error).__name__


def _stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
