"""The forwarder's two channels with the log: what was committed (in), what to retire (out).

`CommittedRows` carries, from the log writer's thread to the forwarder, the
highest committed sequence per topic; the forwarder owns it and the writer's
commit hook feeds it, so neither holds the other. `Retirements` is what the
forwarder asks of the log once Kafka acknowledged events (or refused them for
good); the log writer provides it.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Protocol

from sidecar.model import Settlement


class Retirements(Protocol):
    """Removal of settled rows from the log. Thread-safe."""

    def retire(self, settlement: Settlement) -> concurrent.futures.Future[None]:
        """Queue what Kafka answered (watermarks, delivered client ids, refused events); the
        future resolves once the log committed it."""
        ...

    def retire_now(self) -> None:
        """Commit what is queued without waiting for an append to share the commit."""
        ...


class CommittedRows:
    """The highest committed sequence per topic, reported by the writer, taken by the forwarder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}
        #: Set by a report (and by anyone else who needs the forwarder to look again).
        self.wake = threading.Event()

    def report(self, topic_max: dict[str, int]) -> None:
        """New rows committed (highest sequence per topic). Called on the writer's thread."""
        with self._lock:
            latest = self._latest
            for topic, seq in topic_max.items():
                if seq > latest.get(topic, 0):
                    latest[topic] = seq
        self.wake.set()

    def take(self) -> dict[str, int]:
        """Everything reported since the last take."""
        with self._lock:
            latest, self._latest = self._latest, {}
        return latest
