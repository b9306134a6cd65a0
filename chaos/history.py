"""The history of a fault run: every publish with its attempts, every delivery and ack, faults.

Thread-safe: publisher and subscriber workers record into one `History` concurrently. The
checker reads plain snapshots (`ops()`, `sub_views()`), never the live structures.

Outcomes of one publish attempt:

- ``ok``: answered OK (the event is durably logged);
- ``fail``: a definite error before the log commit, so nothing was written
  (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ALREADY_EXISTS, UNAVAILABLE "shutting down" or
  "could not be written", or a connection that was never made);
- ``unknown``: anything else (deadline, reset connection, killed sidecar).

An event's outcome is ``ok`` if any attempt was ok, else ``unknown`` if any attempt was
unknown, else ``fail``: retries reuse the event id, so one earlier unknown attempt may have
written it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call carrying the event (a Publish, or one PublishBatch it was part of)."""

    outcome: str
    code: str  # grpc status name, "OK", or a per-entry error code
    start: float
    end: float
    message: str = ""


@dataclass(slots=True)
class Op:
    """One event the workload published (possibly in several attempts)."""

    event_id: str
    topic: str
    key: str
    seq: int  # 1, 2, ... per key, in publish order
    payload: bytes
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        outcomes = {a.outcome for a in self.attempts}
        if OK in outcomes:
            return OK
        if UNKNOWN in outcomes or not outcomes:
            return UNKNOWN
        return FAIL

    @property
    def ok_at(self) -> float | None:
        return next((a.end for a in self.attempts if a.outcome == OK), None)


@dataclass
class SubView:
    """What one subscription's clients saw: deliveries, acks confirmed, acks whose result
    never came back (the stream died with them: the sidecar may or may not have applied them).
    An ack answered EXPIRED, UNKNOWN or REVOKED is neither."""

    delivered: Counter[str] = field(default_factory=Counter)
    ack_unresolved: set[str] = field(default_factory=set)
    ack_confirmed: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)  # ack results by status name

    def copy(self) -> SubView:
        return SubView(
            Counter(self.delivered), set(self.ack_unresolved), set(self.ack_confirmed),
            Counter(self.statuses),
        )  # fmt: skip


@dataclass
class Fault:
    """One injected fault: when it started, when it healed, how long recovery took."""

    kind: str
    started: float
    healed: float | None = None
    recovered_s: float | None = None
    detail: str = ""


class History:
    """The record of one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, Op] = {}
        self._subs: dict[str, SubView] = {}
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        self.started = time.monotonic()

    # -- publishes ---------------------------------------------------------------------------

    def begin(self, event_id: str, topic: str, key: str, seq: int, payload: bytes) -> Op:
        op = Op(event_id, topic, key, seq, payload)
        with self._lock:
            if event_id in self._ops:
                raise ValueError(f"event id {event_id} published twice by the workload")
            self._ops[event_id] = op
        return op

    def attempt(self, op: Op, attempt: Attempt) -> None:
        with self._lock:
            op.attempts.append(attempt)

    def ops(self) -> list[Op]:
        with self._lock:
            return [
                Op(o.event_id, o.topic, o.key, o.seq, o.payload, list(o.attempts))
                for o in self._ops.values()
            ]

    def outcome_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(o.outcome for o in self._ops.values())

    def error_codes(self) -> Counter[str]:
        with self._lock:
            return Counter(a.code for o in self._ops.values() for a in o.attempts if a.code != "OK")

    def last_ok(self) -> float | None:
        with self._lock:
            times = [t for o in self._ops.values() if (t := o.ok_at) is not None]
        return max(times, default=None)

    # -- subscriptions -----------------------------------------------------------------------

    def _sub(self, name: str) -> SubView:
        return self._subs.setdefault(name, SubView())

    def delivered(self, sub: str, event_ids: list[str]) -> None:
        with self._lock:
            self._sub(sub).delivered.update(event_ids)

    def ack_sent(self, sub: str, event_ids: list[str]) -> None:
        with self._lock:
            self._sub(sub).ack_unresolved.update(event_ids)

    def ack_result(self, sub: str, event_id: str, status: str) -> None:
        with self._lock:
            view = self._sub(sub)
            view.statuses[status] += 1
            view.ack_unresolved.discard(event_id)
            if status in {"APPLIED", "ALREADY_ACKED"}:
                view.ack_confirmed.add(event_id)

    def sub_views(self) -> dict[str, SubView]:
        with self._lock:
            return {name: view.copy() for name, view in self._subs.items()}

    def delivery_total(self, sub: str) -> int:
        with self._lock:
            return self._sub(sub).delivered.total()

    # -- faults ------------------------------------------------------------------------------

    def fault(self, kind: str, detail: str = "") -> Fault:
        record = Fault(kind, time.monotonic(), detail=detail)
        with self._lock:
            self.faults.append(record)
        return record

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)
