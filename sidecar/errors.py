"""Ferry's one exception tree; `sidecar.api.status` maps it to gRPC status codes.

Domain modules raise these and nothing else crosses the API boundary::

    FerryError
    ├── InvalidArgument        INVALID_ARGUMENT   (google.rpc.BadRequest: field + description)
    ├── EventIdConflict        ALREADY_EXISTS     (same event_id, other content)
    ├── NotFound               NOT_FOUND          (e.g. subscription not open here)
    ├── FailedPrecondition     FAILED_PRECONDITION
    ├── ResourceExhausted      RESOURCE_EXHAUSTED (google.rpc.RetryInfo)
    │   ├── WalFull            the write-ahead log is at its size cap
    │   ├── DiskFull           SQLite said SQLITE_FULL; earlier rows are intact
    │   └── TooManyStreams
    ├── KafkaWaitTimeout       DEADLINE_EXCEEDED  (event logged, still delivered later)
    └── Unavailable            UNAVAILABLE
        ├── ShuttingDown
        └── StorageFailure     the log could not be written (other than full)

    ConfigError                start-up only: bad settings, lock held, pragmas refused
"""

from __future__ import annotations


class FerryError(Exception):
    """Base of every error Ferry answers a client with."""


class InvalidArgument(FerryError):
    """A request field is malformed. Nothing was written."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class EventIdConflict(FerryError):
    """The event_id is already known with a different content."""


class NotFound(FerryError):
    """The named resource does not exist in this sidecar."""


class FailedPrecondition(FerryError):
    """The request conflicts with the state of the sidecar."""


class ResourceExhausted(FerryError):
    """A limit was reached; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WalFull(ResourceExhausted):
    """The write-ahead log is at its configured size cap."""


class DiskFull(ResourceExhausted):
    """The disk under the write-ahead log is full."""


class TooManyStreams(ResourceExhausted):
    """The sidecar's stream limit is reached."""


class KafkaWaitTimeout(FerryError):
    """Kafka did not acknowledge in time; the event stays logged and is delivered later."""


class Unavailable(FerryError):
    """The sidecar cannot serve the request now; retrying later may succeed."""


class ShuttingDown(Unavailable):
    """The sidecar is draining and accepts no new work."""


class StorageFailure(Unavailable):
    """The write-ahead log could not be written."""


class ConfigError(Exception):
    """Settings or the environment make it impossible to start."""
