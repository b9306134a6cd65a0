"""FerryError: a failed call's gRPC code with the google.rpc details of its status trailer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ferry_client._gen.ferry.v1 import publisher_pb2, record_pb2

ERROR_DOMAIN = "ferry.v1"

# Codes a publish retries. RESOURCE_EXHAUSTED only with an ErrorInfo (without one the
# transport refused an oversized request); CANCELLED only when the caller did not cancel.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (UNKNOWN for one gRPC does not know)."""
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


class FerryError(Exception):
    """A Ferry call that failed; `code` and `reason` are what programs branch on.

    `reason` is the google.rpc.ErrorInfo reason (e.g. "FIELD_INVALID", "LOG_FULL"), or None
    when the status carried no ErrorInfo (an error from gRPC itself, not from Ferry).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.error_info: error_details_pb2.ErrorInfo | None = None
        self.retry_info: error_details_pb2.RetryInfo | None = None
        self.bad_request: error_details_pb2.BadRequest | None = None
        self.assigned_event_ids: list[str] = []
        for detail in status.details if status is not None else ():
            self._add_detail(detail)

    def _add_detail(self, detail: any_pb2.Any) -> None:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            self.error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(self.error_info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            self.retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(self.retry_info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            self.bad_request = error_details_pb2.BadRequest()
            detail.Unpack(self.bad_request)
        elif detail.Is(publisher_pb2.AssignedEventIds.DESCRIPTOR):
            assigned = publisher_pb2.AssignedEventIds()
            detail.Unpack(assigned)
            self.assigned_event_ids = list(assigned.event_ids)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> FerryError:
        """Decode a failed call (sync or asyncio) and its `grpc-status-details-bin` trailer."""
        try:
            # Every RpcError a call raises is also that call (sync and asyncio alike).
            status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, error))
        except (ValueError, AttributeError):  # trailer disagrees with the status line, or none
            status = None
        return cls(error.code(), error.details() or "", status)

    @classmethod
    def from_failure(
        cls, failure: record_pb2.Failure, assigned_event_ids: Sequence[str] = ()
    ) -> FerryError:
        """Decode a refusal that is not a call's status: a PublishStream answer's `error`.

        A Failure is a google.rpc.Status flattened; its reason, field and retry_delay land
        where a status's ErrorInfo, BadRequest and RetryInfo would, so code that handles a
        FerryError from a call handles this one the same way.
        """
        error = cls(status_code(failure.code), failure.message)
        if failure.reason:
            error.error_info = error_details_pb2.ErrorInfo(
                reason=failure.reason, domain=ERROR_DOMAIN
            )
        if failure.HasField("retry_delay"):
            error.retry_info = error_details_pb2.RetryInfo(retry_delay=failure.retry_delay)
        if failure.field:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=failure.field, description=failure.message
            )
            error.bad_request = error_details_pb2.BadRequest(field_violations=[violation])
        error.assigned_event_ids = list(assigned_event_ids)
        return error

    def copy(self) -> FerryError:
        """A new FerryError with the same code, message and details (no notes, no traceback)."""
        out = FerryError(self.code, self.message)
        out.error_info, out.retry_info = self.error_info, self.retry_info
        out.bad_request, out.assigned_event_ids = self.bad_request, list(self.assigned_event_ids)
        return out

    @property
    def field(self) -> str | None:
        """For INVALID_ARGUMENT: the path of the offending field (the first BadRequest one)."""
        if self.bad_request is None or not self.bad_request.field_violations:
            return None
        return str(self.bad_request.field_violations[0].field)

    @property
    def reason(self) -> str | None:
        """The ErrorInfo reason, stable for programs to branch on."""
        return self.error_info.reason if self.error_info is not None else None

    @property
    def retry_delay(self) -> float | None:
        """Seconds the server asked to wait before retrying (google.rpc.RetryInfo)."""
        if self.retry_info is None:
            return None
        return float(self.retry_info.retry_delay.ToNanoseconds()) / 1e9

    @property
    def retryable(self) -> bool:
        """Whether the client's policy retries this error (a caller's own cancel aside)."""
        if self.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return self.error_info is not None
        return self.code in RETRYABLE_CODES
