"""Ferry's one exception tree; `sidecar.api.status` maps it to gRPC status codes.

Domain modules raise these and nothing else crosses the API boundary. Every class carries the
stable `reason` a client branches on (google.rpc.ErrorInfo, domain "ferry.v1")::

    FerryError
    ├── InvalidArgument        INVALID_ARGUMENT    FIELD_INVALID (google.rpc.BadRequest)
    │   ├── TopicNotAllowed                        TOPIC_NOT_ALLOWED
    │   └── UndecodableRequest                     REQUEST_UNDECODABLE
    ├── Unauthenticated        UNAUTHENTICATED     UNAUTHENTICATED: no valid bearer token
    ├── PermissionDenied       PERMISSION_DENIED   PERMISSION_DENIED: the policy does not allow it
    ├── EventIdConflict        ALREADY_EXISTS      EVENT_ID_CONFLICT (same id, other content)
    ├── NotFound               NOT_FOUND           SUBSCRIPTION_NOT_FOUND
    ├── FailedPrecondition     FAILED_PRECONDITION
    │   ├── SettingsConflict                       SUBSCRIPTION_SETTINGS_CONFLICT
    │   └── NoDeadLetterTopic                      NO_DEAD_LETTER_TOPIC
    ├── ResourceExhausted      RESOURCE_EXHAUSTED  (google.rpc.RetryInfo)
    │   ├── WalFull                                LOG_FULL: the log is at its size cap
    │   ├── TopicShareFull                         TOPIC_SHARE_FULL: one topic's share of it
    │   ├── DiskFull                               DISK_FULL: SQLITE_FULL; earlier rows intact
    │   ├── TooManyStreams                         TOO_MANY_STREAMS
    │   └── TooManySubscriptions                   TOO_MANY_SUBSCRIPTIONS
    ├── PublishTimeout         DEADLINE_EXCEEDED   (AssignedEventIds: retry with these ids)
    │   ├── KafkaWaitTimeout                       KAFKA_ACK_TIMEOUT: logged, delivered later
    │   └── LogCommitTimeout                       LOG_COMMIT_TIMEOUT: maybe logged
    └── Unavailable            UNAVAILABLE         (google.rpc.RetryInfo)
        ├── ShuttingDown                           SHUTTING_DOWN
        └── StorageFailure                         LOG_WRITE_FAILED (other than full)

    ConfigError                start-up only: bad settings, lock held, pragmas refused

Anything else that escapes a handler is a bug: INTERNAL, reason INTERNAL, text not leaked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

ERROR_DOMAIN = "ferry.v1"


class FerryError(Exception):
    """Base of every error Ferry answers a client with."""

    reason: ClassVar[str] = "INTERNAL"


class InvalidArgument(FerryError):
    """A request field is malformed. Nothing was written."""

    reason = "FIELD_INVALID"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class TopicNotAllowed(InvalidArgument):
    """A topic outside the server's allow-list."""

    reason = "TOPIC_NOT_ALLOWED"


class UndecodableRequest(InvalidArgument):
    """The bytes received are not a valid message of the RPC's request type."""

    reason = "REQUEST_UNDECODABLE"

    def __init__(self, message_type: str) -> None:
        super().__init__("request", f"is not a valid {message_type}")


class Unauthenticated(FerryError):
    """The call carries no accepted bearer token. The message never says which part was wrong."""

    reason = "UNAUTHENTICATED"

    def __init__(self) -> None:
        super().__init__("missing or invalid credentials")


class PermissionDenied(FerryError):
    """The caller is known but the authorisation policy does not allow this. Nothing written."""

    reason = "PERMISSION_DENIED"


class EventIdConflict(FerryError):
    """The event_id is already known with a different content."""

    reason = "EVENT_ID_CONFLICT"


class NotFound(FerryError):
    """The named subscription is not open in this sidecar."""

    reason = "SUBSCRIPTION_NOT_FOUND"


class FailedPrecondition(FerryError):
    """The request conflicts with the state of the sidecar."""

    reason = "FAILED_PRECONDITION"


class SettingsConflict(FailedPrecondition):
    """The subscription is open here with other settings."""

    reason = "SUBSCRIPTION_SETTINGS_CONFLICT"


class NoDeadLetterTopic(FailedPrecondition):
    """A dead-letter nack on a subscription that has no dead-letter topic."""

    reason = "NO_DEAD_LETTER_TOPIC"


class ResourceExhausted(FerryError):
    """A limit was reached; the client should retry after `retry_after` seconds."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WalFull(ResourceExhausted):
    """The write-ahead log is at its configured size cap."""

    reason = "LOG_FULL"


class TopicShareFull(ResourceExhausted):
    """One topic's share of the log's cap is used up (its events are not reaching Kafka)."""

    reason = "TOPIC_SHARE_FULL"


class DiskFull(ResourceExhausted):
    """The disk under the write-ahead log is full."""

    reason = "DISK_FULL"


class TooManyStreams(ResourceExhausted):
    """The sidecar's stream limit is reached."""

    reason = "TOO_MANY_STREAMS"


class TooManySubscriptions(ResourceExhausted):
    """The sidecar's subscription limit is reached."""

    reason = "TOO_MANY_SUBSCRIPTIONS"


class PublishTimeout(FerryError):
    """A publish ran out of time; `event_ids` lets the client retry without duplicates."""

    def __init__(self, message: str, event_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.event_ids = list(event_ids)


class KafkaWaitTimeout(PublishTimeout):
    """Kafka did not acknowledge in time; the events stay logged and are delivered later."""

    reason = "KAFKA_ACK_TIMEOUT"


class LogCommitTimeout(PublishTimeout):
    """The call's deadline came before the log commit: the events may or may not be logged."""

    reason = "LOG_COMMIT_TIMEOUT"


class Unavailable(FerryError):
    """The sidecar cannot serve the request now; retrying later may succeed."""

    reason = "UNAVAILABLE"
    retry_after: float = 1.0


class ShuttingDown(Unavailable):
    """The sidecar is draining and accepts no new work."""

    reason = "SHUTTING_DOWN"


class StorageFailure(Unavailable):
    """The write-ahead log could not be written."""

    reason = "LOG_WRITE_FAILED"


class ConfigError(Exception):
    """Settings or the environment make it impossible to start."""
