"""What one commit appends: each event's fate, and the new events as one slice per topic.

Runs on the writer's thread inside its transaction (writer.py owns both). An
event whose id Ferry assigned is new by construction; a client's id is looked
up (this commit's events, then the log's client ids, assigned-id ranges and
parked events) and answered as a duplicate, or refused as a conflict when the
content differs. Caps are checked per request, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.errors import EventIdConflict, FerryError
from sidecar.model import Accepted, Outcome, OutgoingEvent, Rejected
from sidecar.wal.admission import Admission, Usage
from sidecar.wal.digest import event_digest
from sidecar.wal.schema import UNKNOWN_DIGEST, encode_headers
from sidecar.wal.slices import SliceBuilder, SliceRow
from sidecar.wal.store import ClientIdRow, Known, Statements


@dataclass(slots=True)
class Tally:
    """The log's usage and last sequence as a transaction goes; kept only if it commits."""

    usage: Usage
    seq: int


class Appender:
    """Plans and writes the appends of a commit, on the writer's connection."""

    def __init__(self, sql: Statements, admission: Admission) -> None:
        self._sql = sql
        self._admission = admission
        self._parked_rows = 0

    def log(
        self,
        requests: Sequence[Sequence[OutgoingEvent]],
        tally: Tally,
        now_ms: int,
        parked_rows: int,
    ) -> tuple[list[list[Outcome] | FerryError], dict[str, int]]:
        """Decide every event's fate, then write the new ones as one slice per topic.

        Sequences are handed out slice by slice, so each slice's are consecutive; an event
        repeated within the commit answers with the sequence of its first occurrence."""
        results: list[list[Outcome] | FerryError] = []
        new: dict[str, list[OutgoingEvent]] = {}
        seen: dict[str, tuple[str, int, bytes]] = {}  # client id: (topic, index in new, digest)
        waiting: list[tuple[list[Outcome | None], int, str, int]] = []
        self._parked_rows = parked_rows
        for events in requests:
            outcome = self._admit(events, seen, new, waiting, tally)
            results.append(outcome)  # type: ignore[arg-type]  # the Nones are filled below
        slices: list[SliceRow] = []
        client_ids: list[ClientIdRow] = []
        first_seq: dict[str, int] = {}
        digests = {(t, i): d for t, i, d in seen.values()}
        for topic, events in new.items():
            builder = SliceBuilder(tally.seq + 1)
            first_seq[topic] = builder.first_seq
            for index, event in enumerate(events):
                seq = builder.add(event)
                if not event.assigned_id:
                    client_ids.append((event.event_id, digests[(topic, index)], seq, now_ms))
            client_ids.extend((i, UNKNOWN_DIGEST, s, now_ms) for i, s in builder.kept_ids)
            slices.append(builder.row(topic, now_ms))
            tally.seq = builder.last_seq
        if slices:
            self._sql.insert_slices(slices, client_ids)
        for outcomes, position, topic, index in waiting:
            event_id = new[topic][index].event_id
            seq = first_seq[topic] + index
            duplicate = outcomes[position] is not None
            outcomes[position] = Accepted(event_id, seq, duplicate, now_ms)
        return results, {s[2]: s[0] for s in slices}

    def _admit(
        self,
        events: Sequence[OutgoingEvent],
        seen: dict[str, tuple[str, int, bytes]],
        new: dict[str, list[OutgoingEvent]],
        waiting: list[tuple[list[Outcome | None], int, str, int]],
        tally: Tally,
    ) -> list[Outcome | None] | FerryError:
        """One request's outcomes; a new event's (and a repeat of one new in this commit) is
        left None and noted in `waiting`, to be filled once sequences are handed out."""
        refusal = self._admission.refusal(tally.usage, events)
        if refusal is not None:
            # Repeats of known events write nothing: only new ones need room under the cap.
            fresh = [e for e in events if e.assigned_id or self._known(e.event_id, seen) is None]
            refusal = self._admission.refusal(tally.usage, fresh) if fresh else None
        if refusal is not None:
            return refusal
        outcomes: list[Outcome | None] = []
        for event in events:
            if event.assigned_id:
                # An id Ferry assigned is new by construction: no look-up, no digest.
                self._add_new(event, new, waiting, outcomes, tally)
                continue
            fingerprint = event_digest(
                event.topic, event.key, event.payload, encode_headers(event.headers)
            )
            in_commit = seen.get(event.event_id)
            if in_commit is not None:
                topic, index, known_digest = in_commit
                if known_digest != fingerprint:
                    outcomes.append(Rejected(_conflict(event.event_id)))
                else:
                    outcomes.append(_REPEAT)
                    waiting.append((outcomes, len(outcomes) - 1, topic, index))
                continue
            known = self._known(event.event_id, seen)
            if known is not None:
                if known.digest not in (fingerprint, UNKNOWN_DIGEST):
                    outcomes.append(Rejected(_conflict(event.event_id)))
                else:
                    outcomes.append(
                        Accepted(
                            event.event_id,
                            known.sequence,
                            True,
                            known.published_ms,
                            known.position,
                            known.delivered,
                        )
                    )
                continue
            seen[event.event_id] = (event.topic, len(new.get(event.topic, ())), fingerprint)
            self._add_new(event, new, waiting, outcomes, tally)
        return outcomes

    @staticmethod
    def _add_new(
        event: OutgoingEvent,
        new: dict[str, list[OutgoingEvent]],
        waiting: list[tuple[list[Outcome | None], int, str, int]],
        outcomes: list[Outcome | None],
        tally: Tally,
    ) -> None:
        topic_events = new.setdefault(event.topic, [])
        waiting.append((outcomes, len(outcomes), event.topic, len(topic_events)))
        topic_events.append(event)
        outcomes.append(None)
        tally.usage.add(event.topic, event.size)

    def _known(self, event_id: str, seen: dict[str, tuple[str, int, bytes]]) -> Known | None:
        """What the log knows of a client id (not counting this commit's own events)."""
        if event_id in seen:
            return Known(0, seen[event_id][2], 0, False, None)  # only asked whether it is known
        known = self._sql.find_client_id(event_id)
        if known is None:
            known = self._sql.find_assigned_id(event_id)
        if known is None and self._parked_rows:
            known = self._sql.find_parked(event_id)
        return known


#: The outcome of an event repeated within its commit, until its sequence is known.
_REPEAT: Outcome = Accepted("", 0, True, 0)


def _conflict(event_id: str) -> EventIdConflict:
    return EventIdConflict(f"event_id {event_id!r} was already published with other content")
