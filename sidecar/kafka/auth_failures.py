"""Which error reports of a Kafka client mean that Kafka refuses Ferry's credentials,
certificates or permissions, and what an operator should check.

librdkafka reports these through a client's error callback and keeps retrying with backoff,
like any connection failure: a wrong SASL password (`_AUTHENTICATION`), a broker certificate
that does not verify or a host name it does not name (`_SSL`), a client certificate the broker
refuses (a TLS alert, reported as `_TRANSPORT`), or a missing ACL (`*_AUTHORIZATION_FAILED`).
None of them heals on its own: the Kafka side of Ferry is down until the secret, certificate
or ACL is fixed (a new secret takes a restart: librdkafka cannot change credentials of a
live client). Ferry reports them as `kafka_auth_failed` log lines (rate-limited, like every
Kafka error: sidecar/observability/kafka_logs.py) and as NOT_SERVING for `ferry.kafka`
(sidecar/forward/forwarder.py), while publishes keep being logged.

The texts librdkafka gives name brokers, mechanisms and OpenSSL reasons, never a secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

AUTHENTICATION = "authentication"
TLS = "tls"
AUTHORIZATION = "authorization"

_KINDS = {
    "_AUTHENTICATION": AUTHENTICATION,
    "SASL_AUTHENTICATION_FAILED": AUTHENTICATION,
    "_SSL": TLS,
    "TOPIC_AUTHORIZATION_FAILED": AUTHORIZATION,
    "GROUP_AUTHORIZATION_FAILED": AUTHORIZATION,
    "CLUSTER_AUTHORIZATION_FAILED": AUTHORIZATION,
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": AUTHORIZATION,
}
# A broker that refuses Ferry's client certificate ends the handshake with a TLS alert, which
# librdkafka reports as a transport error ("ssl/tls alert bad certificate: SSL alert number 42").
_TLS_ALERT = re.compile(r"ssl/tls alert|SSL alert number", re.IGNORECASE)

HINTS = {
    AUTHENTICATION: "Kafka refused Ferry's credentials: check --kafka-sasl-username and "
    "--kafka-sasl-password-file (or the --kafka-oauth-* settings), then restart Ferry",
    TLS: "the TLS handshake with Kafka failed: check that --kafka-ssl-ca holds the CA of the "
    "brokers' certificates, that they name the bootstrap hosts (--kafka-ssl-verify), and that "
    "the broker accepts --kafka-ssl-cert; then restart Ferry",
    AUTHORIZATION: "Kafka refused an operation: grant Ferry's principal the ACLs it needs "
    "(write and describe on its topics, read on its consumer groups)",
}


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """A refusal of Ferry's credentials, certificates or permissions."""

    kind: str  # AUTHENTICATION, TLS or AUTHORIZATION
    code: str  # librdkafka's error name, e.g. _AUTHENTICATION
    error: str  # librdkafka's text (no secret)

    @property
    def hint(self) -> str:
        return HINTS[self.kind]


def auth_failure(err: Any) -> AuthFailure | None:
    """The refusal an error report (confluent_kafka.KafkaError) stands for, if it is one."""
    code = str(err.name()) if hasattr(err, "name") else ""
    text = error_text(err)
    kind = _KINDS.get(code)
    if kind is None and code == "_TRANSPORT" and _TLS_ALERT.search(text):
        kind = TLS
    return AuthFailure(kind, code, text) if kind is not None else None


def error_text(err: Any) -> str:
    """librdkafka's text of an error report."""
    text = getattr(err, "str", None)
    return str(text()) if callable(text) else str(err)
