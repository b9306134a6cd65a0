"""Who the caller of an RPC is, and what the authorisation policy lets it do.

Servicers ask `AccessControl.caller(context)` once per call (once per stream) and then check
each action: publishing to topics, opening a subscription, acking on one, reading the status.
Without a policy (`OpenAccess`) every check passes and the topic allow-list alone applies.
With one (`PolicyAccess`), the caller is identified by its bearer token (when tokens are
configured: the token interceptor already refused calls without an accepted one) and by its
client certificate (mutual TLS), and sidecar/api/policy.py decides; a refusal is
PermissionDenied and comes before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from sidecar.api.auth import bearer_token
from sidecar.api.policy import Identity, Policy, PolicyError, load_policy
from sidecar.api.tokens import TokenStore
from sidecar.config import Settings
from sidecar.errors import ConfigError

#: grpc's auth context keys of a verified client certificate.
SUBJECT = "x509_subject"
SANS = "x509_subject_alternative_name"


class Caller(Protocol):
    def check_publish(self, topics: Iterable[str]) -> None: ...

    def check_subscription(self, name: str, topics: Iterable[str], dead_letter: str) -> None: ...

    def check_settle(self, name: str) -> None: ...

    def check_status(self) -> None: ...


class AccessControl(Protocol):
    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller: ...


class Anyone:
    """A caller allowed everything (no policy)."""

    def check_publish(self, topics: Iterable[str]) -> None:
        return None

    def check_subscription(self, name: str, topics: Iterable[str], dead_letter: str) -> None:
        return None

    def check_settle(self, name: str) -> None:
        return None

    def check_status(self) -> None:
        return None


ANYONE = Anyone()


class OpenAccess:
    """No policy: every caller may do everything the topic allow-list allows."""

    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        return ANYONE


@dataclass(frozen=True)
class PolicyCaller:
    policy: Policy
    identity: Identity

    def check_publish(self, topics: Iterable[str]) -> None:
        self.policy.check_publish(self.identity, topics)

    def check_subscription(self, name: str, topics: Iterable[str], dead_letter: str) -> None:
        self.policy.check_subscription(self.identity, name, topics, dead_letter)

    def check_settle(self, name: str) -> None:
        self.policy.check_settle(self.identity, name)

    def check_status(self) -> None:
        self.policy.check_status(self.identity)


class PolicyAccess:
    """Callers identified by token and client certificate, checked against `policy`."""

    def __init__(self, policy: Policy, tokens: TokenStore | None) -> None:
        self._policy = policy
        self._tokens = tokens

    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        return PolicyCaller(
            self._policy,
            identify(context.invocation_metadata(), context.auth_context(), self._tokens),  # type: ignore[arg-type]
        )


def identify(
    metadata: Sequence[tuple[str, str | bytes]] | None,
    auth_context: Mapping[str, Iterable[bytes]],
    tokens: TokenStore | None,
) -> Identity:
    """The caller's identity from its call metadata (bearer token) and its TLS peer."""
    match = tokens.match(bearer_token(metadata)) if tokens is not None else None
    subjects = [s.decode(errors="replace") for s in auth_context.get(SUBJECT, ())]
    sans = frozenset(s.decode(errors="replace") for s in auth_context.get(SANS, ()))
    return Identity(
        token_sha256=match.sha256 if match else None,
        token_source=match.source if match else None,
        cert_subject=subjects[0] if subjects else None,
        cert_sans=sans,
    )


def access_control(settings: Settings, tokens: TokenStore | None) -> AccessControl:
    """The access control `settings` ask for; ConfigError if the policy is malformed or names
    identities Ferry cannot see (tokens without --token-file or FERRY_TOKENS, certificates
    without --tls-client-ca, a token file that is not one of --token-file)."""
    if settings.policy_file is None:
        return OpenAccess()
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        raise ConfigError(f"policy_file: {exc}") from None
    if policy.needs_tokens() and tokens is None:
        raise ConfigError("policy_file: names tokens, but no --token-file or FERRY_TOKENS is set")
    if policy.needs_certificates() and settings.tls_client_ca is None:
        raise ConfigError("policy_file: names client certificates, but --tls-client-ca is not set")
    configured = {str(p) for p in settings.token_file}
    unknown = sorted(policy.token_files() - configured)
    if unknown:
        raise ConfigError(f"policy_file: token_file {unknown} is not one of --token-file")
    return PolicyAccess(policy, tokens)
