"""What a failed gRPC call says beyond its code: the google.rpc details Ferry attaches."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar._gen.ferry.v1 import publisher_pb2


def status_details(error: grpc.RpcError) -> list[Any]:
    """The google.rpc details of a failed call, unpacked (BadRequest, RetryInfo, ...)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    unpacked: list[Any] = []
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ErrorInfo,
            publisher_pb2.AssignedEventIds,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked.append(message)
    return unpacked


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The fields a BadRequest detail names."""
    return [
        v.field
        for d in status_details(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


def error_reason(error: grpc.RpcError) -> str | None:
    """The google.rpc.ErrorInfo reason of a failed call (None: the call carried none)."""
    for d in status_details(error):
        if isinstance(d, error_details_pb2.ErrorInfo):
            assert d.domain == "ferry.v1", d
            return str(d.reason)
    return None


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """The delay a RetryInfo detail asks for, in seconds."""
    for d in status_details(error):
        if isinstance(d, error_details_pb2.RetryInfo):
            return float(d.retry_delay.ToNanoseconds()) / 1e9
    return None
