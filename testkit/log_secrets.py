"""The check every secured test ends with: Ferry, logging at debug level, wrote none of the
secrets the test gave it.

    secrets = SecretLog()
    ferry = secrets.watch(FerryProcess(...))   # adds --log-level debug unless it has a level
    secrets.add(token)                         # a token, a password, a client secret
    secrets.add_pem_key(issued.key_pem)        # a private key: its base64 body
    secrets.add_file(password_file)            # a secret file's content, as Ferry reads it
    ...
    secrets.assert_clean()                     # in each watched log: debug lines, no secret

The check cannot pass vacuously: it needs at least one watched Ferry and one secret, and every
watched log must hold debug lines (the level at which a leak is likeliest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

DEBUG_LEVEL = ("--log-level", "debug")
#: Any PEM private key's armour (``-----BEGIN [ENCRYPTED |EC ]PRIVATE KEY-----``).
PRIVATE_KEY_ARMOUR = "PRIVATE KEY-----"
#: A PEM body line shorter than this (a key's last line) could match by chance.
MIN_PEM_LINE = 16


class Logging(Protocol):
    """What the check needs of a process: its arguments (before it starts) and its log."""

    args: list[str]
    log_path: Path

    def alive(self) -> bool: ...


P = TypeVar("P", bound=Logging)


class SecretLog:
    """Secrets a test used and the Ferry processes it ran; see the module's doc."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._logs: list[Path] = []

    def watch(self, process: P) -> P:
        """Check `process`'s log at the end; a process not started yet and given no log level
        gets ``--log-level debug``."""
        if not process.alive() and "--log-level" not in process.args:
            process.args = [*process.args, *DEBUG_LEVEL]
        self._logs.append(process.log_path)
        return process

    def add(self, *secrets: str | bytes) -> None:
        for secret in secrets:
            text = secret.decode() if isinstance(secret, bytes) else secret
            assert text.strip(), "an empty secret would match every log"
            self._secrets.add(text.strip())

    def add_file(self, path: Path) -> None:
        """A secret file: each line of a token file (comments aside), or a password; a PEM
        private key's body lines."""
        text = path.read_text()
        if PRIVATE_KEY_ARMOUR in text:
            self.add_pem_key(text)
            return
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                self.add(line)

    def add_pem_key(self, pem: str | bytes) -> None:
        """A private key: every base64 line of its body (a line alone is already a leak)."""
        text = pem.decode() if isinstance(pem, bytes) else pem
        body = [line for line in text.splitlines() if line and not line.startswith("-----")]
        assert body, "no PEM body"
        self.add(*(line for line in body if len(line) >= MIN_PEM_LINE))

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def assert_clean(self) -> None:
        """Every watched log has debug lines and none of the secrets, nor a private key's
        armour."""
        assert self._logs, "no Ferry was watched: the check would pass without looking"
        assert self._secrets, "no secret was registered: the check would pass without looking"
        for log in self._logs:
            text = log.read_text(errors="replace")
            assert '"level": "debug"' in text, f"{log}: no debug lines, the check would not count"
            leaked = sum(secret in text for secret in self._secrets)
            assert not leaked, f"{log}: holds {leaked} of the test's {len(self._secrets)} secrets"
            assert PRIVATE_KEY_ARMOUR not in text, f"{log}: holds a PEM private key"
