"""TLS and mutual TLS server credentials whose files are read again when they change.

gRPC calls `ReloadingCertificates.fetch` at every TLS handshake (grpc's dynamic SSL server
credentials). It compares the files' stat (inode, size, mtime) with what it loaded last, which
costs a few `stat` calls, and reads them only when one changed: a rotated certificate (a
Kubernetes Secret's files swapped, cert-manager writing new ones) takes effect at the next
handshake, without a restart, and connections already open keep the certificate they were
established with, so their streams carry on. Files that cannot be read, or hold no PEM block
of the expected kind (a rotation caught half-way), keep the previous certificate in use; the
next change is tried again. Neither the key nor any file content is ever logged.

With a client CA (`--tls-client-ca`) every client must present a certificate signed by it
(mutual TLS); the CA file is reloaded like the others. TLS versions are gRPC core's: TLS 1.2
at least, TLS 1.3 when both sides support it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

from sidecar.errors import ConfigError

log = structlog.get_logger(__name__)

#: What each file must contain to be taken for a certificate (chain) or a private key.
CERTIFICATE_MARK = b"-----BEGIN CERTIFICATE-----"
KEY_MARK = b"PRIVATE KEY-----"

FileStamp = tuple[int, int, int] | None  # (inode, size, mtime_ns) of a readable file


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's certificate chain, its key and (for mTLS) the client CA are."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def paths(self) -> list[Path]:
        return [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])


@dataclass(frozen=True)
class _Loaded:
    stamps: tuple[FileStamp, ...]
    contents: tuple[bytes, ...]


class ReloadingCertificates:
    """The certificate configuration of `files`, loaded again at a handshake after a change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()  # handshakes can run on several gRPC threads
        loaded = self._read()
        problem = _problem(files, loaded.contents)
        if problem is not None:
            raise ConfigError(problem)
        self._current = loaded
        self._refused: tuple[FileStamp, ...] | None = None  # files seen unusable, unchanged since

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that call `fetch` at every handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._current),
            self.fetch,  # type: ignore[arg-type]  # gRPC documents None as "unchanged"
            require_client_authentication=self.files.client_ca is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration if the files changed into a usable one; None keeps the last."""
        with self._lock:
            stamps = self._stamps()
            if stamps in (self._current.stamps, self._refused) or None in stamps:
                return None
            try:
                loaded = self._read()
            except ConfigError as exc:
                problem: str | None = str(exc)
            else:
                problem = _problem(self.files, loaded.contents)
            if problem is not None:
                self._refused = stamps
                log.warning("tls_files_not_loaded", error=problem, keeping="the last certificate")
                return None
            changed = loaded.contents != self._current.contents
            self._current = loaded
            if not changed:
                return None
            log.info("tls_certificates_reloaded", files=[str(p) for p in self.files.paths()])
            return self._configuration(loaded)

    def _stamps(self) -> tuple[FileStamp, ...]:
        return tuple(_stamp(p) for p in self.files.paths())

    def _read(self) -> _Loaded:
        stamps = self._stamps()
        contents: list[bytes] = []
        for path in self.files.paths():
            try:
                contents.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        return _Loaded(stamps, tuple(contents))

    def _configuration(self, loaded: _Loaded) -> grpc.ServerCertificateConfiguration:
        cert, key, *client_ca = loaded.contents
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=client_ca[0] if client_ca else None
        )


def _stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)  # follows symbolic links: a Secret volume swaps them
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _problem(files: TlsFiles, contents: tuple[bytes, ...]) -> str | None:
    """Why these contents cannot be used (naming the file, never quoting it), or None."""
    cert, key, *client_ca = contents
    if CERTIFICATE_MARK not in cert:
        return f"tls_cert: {files.cert} holds no PEM certificate"
    if KEY_MARK not in key:
        return f"tls_key: {files.key} holds no PEM private key"
    if client_ca and CERTIFICATE_MARK not in client_ca[0]:
        return f"tls_client_ca: {files.client_ca} holds no PEM certificate"
    return None
