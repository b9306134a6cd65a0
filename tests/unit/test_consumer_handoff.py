"""The consumer thread's hand-off to the loop: in order, one wake-up for many posts (no Kafka)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sidecar.kafka.consumer import ConsumerThread, consumer_config
from sidecar.kafka.ports import AssignedPartition, fetched_record


class RecordingSink:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_assigned(self, partitions: list[AssignedPartition]) -> None:
        self.seen.append(("assigned", [p.partition for p in partitions]))

    def on_records(self, records: list[Any]) -> None:
        self.seen.append(("records", [r.offset for r in records]))

    async def on_revoked(self, partitions: list[tuple[str, int]], lost: bool) -> list[Any]:
        return []

    def on_consumer_replaced(self) -> None:
        self.seen.append(("replaced", None))


async def test_posts_from_the_thread_arrive_in_order_with_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    sink = RecordingSink()
    thread = ConsumerThread(consumer_config("127.0.0.1:1", "g", False, {}), ["t"], loop, sink)
    wakeups = 0
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return original(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:

        def consumer_side() -> None:
            thread._handoff.post(sink.on_records, [fetched_record("t", 0, 1, None, b"a")])
            thread._handoff.post(sink.on_assigned, [AssignedPartition("t", 1, None, "")])
            thread._handoff.post(sink.on_records, [fetched_record("t", 1, 7, None, b"b")])

        worker = threading.Thread(target=consumer_side)
        worker.start()
        worker.join()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sink.seen == [("records", [1]), ("assigned", [1]), ("records", [7])]
        assert wakeups == 1
        # Drained: the next post wakes the loop again.
        thread._handoff.post(lambda _: sink.on_consumer_replaced(), None)
        await asyncio.sleep(0)
        assert sink.seen[-1] == ("replaced", None)
        assert wakeups == 2
    finally:
        del loop.call_soon_threadsafe
