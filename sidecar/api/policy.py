"""The authorisation policy (`--policy-file`): which caller may publish to which topics and
open which subscriptions. Pure logic: parsing, matching, decisions; no gRPC.

The file is YAML (or JSON, which YAML reads too)::

    principals:
      - name: orders-service                 # shown in logs; never a secret
        token_sha256: 3f1d...c0              # sha256 (hex) of a bearer token, or a list
        token_file: /etc/ferry/tokens/orders # any token of this --token-file
        cert_subject: "CN=orders,O=Acme"     # a client certificate's subject (mTLS)
        cert_san: spiffe://acme/ns/shop/sa/orders   # or any of its subject alternative names
        publish: [orders, "orders.*"]        # topics it may publish to
        subscriptions: ["orders-audit-*"]    # subscriptions it may open (and ack, nack, extend)
        read: [orders]                       # topics its subscriptions may read
        status: true                         # may call ferry.v1.Admin/GetStatus (ferry status)

A principal needs at least one identity (token_sha256, token_file, cert_subject, cert_san);
each may be one string or a list. A pattern is an exact name, or a prefix ending in `*`
("orders.*" matches "orders.eu"; "*" matches everything). What is not granted is denied; a
caller matching several principals gets what any of them grants. The policy holds no secret:
tokens are named by their SHA-256 or by the file that holds them.

A subscription opened with a dead-letter topic also needs `publish` on that topic, since a
nack writes there. The status (`status: true`, default false) holds no payload and no secret,
but it names every topic and subscription of the sidecar and their errors: it is granted to
the operator's principal, not to every application.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidecar.errors import PermissionDenied

IDENTITY_KEYS = ("token_sha256", "token_file", "cert_subject", "cert_san")
GRANT_KEYS = ("publish", "subscriptions", "read")
STATUS_KEY = "status"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")


class PolicyError(ValueError):
    """The policy file is malformed; the message names the principal and key."""


@dataclass(frozen=True)
class Patterns:
    """Exact names and name prefixes (a pattern ending in `*`)."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> Patterns:
        exact = {p for p in patterns if not p.endswith("*")}
        prefixes = tuple(sorted({p[:-1] for p in patterns if p.endswith("*")}))
        return cls(frozenset(exact), prefixes)

    def matches(self, name: str) -> bool:
        return name in self.exact or any(name.startswith(p) for p in self.prefixes)


@dataclass(frozen=True)
class Identity:
    """What is known of a caller: its bearer token (by source file and hash) and its client
    certificate (subject and subject alternative names)."""

    token_sha256: str | None = None
    token_source: str | None = None
    cert_subject: str | None = None
    cert_sans: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Principal:
    name: str
    token_sha256: frozenset[str]
    token_files: frozenset[str]
    cert_subjects: frozenset[str]
    cert_sans: frozenset[str]
    publish: Patterns
    subscriptions: Patterns
    read: Patterns
    status: bool = False

    def is_(self, who: Identity) -> bool:
        return (
            (who.token_sha256 is not None and who.token_sha256 in self.token_sha256)
            or (who.token_source is not None and who.token_source in self.token_files)
            or (who.cert_subject is not None and who.cert_subject in self.cert_subjects)
            or bool(who.cert_sans & self.cert_sans)
        )


@dataclass(frozen=True)
class Policy:
    principals: tuple[Principal, ...]

    def of(self, who: Identity) -> list[Principal]:
        """The principals `who` is."""
        return [p for p in self.principals if p.is_(who)]

    def may_publish(self, who: Identity, topic: str) -> bool:
        return any(p.publish.matches(topic) for p in self.of(who))

    def may_open(self, who: Identity, subscription: str) -> bool:
        return any(p.subscriptions.matches(subscription) for p in self.of(who))

    def may_read(self, who: Identity, topic: str) -> bool:
        return any(p.read.matches(topic) for p in self.of(who))

    def check_publish(self, who: Identity, topics: Iterable[str]) -> None:
        """PermissionDenied naming the first topic `who` may not publish to."""
        for topic in dict.fromkeys(topics):
            if not self.may_publish(who, topic):
                raise PermissionDenied(f"not allowed to publish to topic {topic!r}")

    def check_subscription(
        self, who: Identity, name: str, topics: Iterable[str], dead_letter_topic: str
    ) -> None:
        """PermissionDenied unless `who` may open `name`, read every topic and publish to the
        dead-letter topic (if any)."""
        self.check_settle(who, name)
        for topic in topics:
            if not self.may_read(who, topic):
                raise PermissionDenied(f"not allowed to read topic {topic!r}")
        if dead_letter_topic and not self.may_publish(who, dead_letter_topic):
            raise PermissionDenied(
                f"not allowed to publish to the dead-letter topic {dead_letter_topic!r}"
            )

    def check_status(self, who: Identity) -> None:
        """PermissionDenied unless one of `who`'s principals is granted `status: true`."""
        if not any(p.status for p in self.of(who)):
            raise PermissionDenied("not allowed to read the status (policy: status: true)")

    def check_settle(self, who: Identity, name: str) -> None:
        """PermissionDenied unless `who` may open subscription `name` (acks, nacks and lease
        extensions are allowed on the subscriptions a caller may open)."""
        if not self.may_open(who, name):
            raise PermissionDenied(f"not allowed to use subscription {name!r}")

    def needs_tokens(self) -> bool:
        return any(p.token_sha256 or p.token_files for p in self.principals)

    def needs_certificates(self) -> bool:
        return any(p.cert_subjects or p.cert_sans for p in self.principals)

    def token_files(self) -> set[str]:
        return {f for p in self.principals for f in p.token_files}


def load_policy(path: Path) -> Policy:
    """Read and parse the policy file; PolicyError (naming the file) if it is malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        raise PolicyError(f"cannot read {path}: {why}") from None
    try:
        return parse_policy(text)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def parse_policy(text: str) -> Policy:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"not valid YAML or JSON{where}") from None
    if not isinstance(document, Mapping) or set(document) != {"principals"}:
        raise PolicyError("expected a mapping with one key, principals")
    entries = document["principals"]
    if not isinstance(entries, list):
        raise PolicyError("principals: expected a list")
    principals = [_principal(i, entry) for i, entry in enumerate(entries)]
    names = [p.name for p in principals]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PolicyError(f"principals: names must be unique, repeated: {duplicates}")
    return Policy(tuple(principals))


def _principal(index: int, entry: Any) -> Principal:
    where = f"principals[{index}]"
    if not isinstance(entry, Mapping):
        raise PolicyError(f"{where}: expected a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PolicyError(f"{where}.name: expected a name of letters, digits and ._:@/-")
    where = f"principals[{index}] ({name})"
    unknown = set(entry) - {"name", *IDENTITY_KEYS, *GRANT_KEYS, STATUS_KEY}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    values = {key: _strings(entry.get(key), f"{where}.{key}") for key in IDENTITY_KEYS}
    if not any(values.values()):
        raise PolicyError(f"{where}: needs an identity: one of {', '.join(IDENTITY_KEYS)}")
    hashes = {h.lower() for h in values["token_sha256"]}
    for digest in hashes:
        if not _SHA256.match(digest):
            raise PolicyError(f"{where}.token_sha256: expected 64 hex digits (a SHA-256)")
    grants = {key: _strings(entry.get(key), f"{where}.{key}") for key in GRANT_KEYS}
    status = entry.get(STATUS_KEY, False)
    if not isinstance(status, bool):
        raise PolicyError(f"{where}.{STATUS_KEY}: expected true or false")
    return Principal(
        name=name,
        token_sha256=frozenset(hashes),
        token_files=frozenset(values["token_file"]),
        cert_subjects=frozenset(values["cert_subject"]),
        cert_sans=frozenset(values["cert_san"]),
        publish=Patterns.parse(grants["publish"]),
        subscriptions=Patterns.parse(grants["subscriptions"]),
        read=Patterns.parse(grants["read"]),
        status=status,
    )


def _strings(value: Any, where: str) -> list[str]:
    """A string or a list of non-empty strings, as a list."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise PolicyError(f"{where}: expected a string or a list of non-empty strings")
    return list(items)
