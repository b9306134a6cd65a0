"""Subscribe to TOPIC as SUBSCRIPTION (from the earliest record) and ack every delivery.

Prints {"received": EXPECT} and exits 0 once EXPECT distinct event ids were handled;
exits 1 after TIMEOUT_S seconds without that, or if the subscription is refused. A secured
Ferry is reached as the FERRY_TLS_* and FERRY_TOKEN_FILE variables say (Credentials.from_env).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

from ferry_client import Credentials, Message, StartPosition, Subscriber


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    expect, timeout = int(os.environ["EXPECT"]), float(os.environ["TIMEOUT_S"])
    seen: set[str] = set()
    lock, done = threading.Lock(), threading.Event()

    def handler(message: Message) -> None:
        with lock:
            seen.add(message.event_id)
            if len(seen) >= expect:
                done.set()

    subscriber = Subscriber(
        handler,
        os.environ["SUBSCRIPTION"],
        [os.environ["TOPIC"]],
        start_position=StartPosition.EARLIEST,
        credentials=Credentials.from_env(),
    ).start()  # FERRY_ADDR
    deadline = time.monotonic() + timeout
    try:
        while not done.wait(0.1) and subscriber.error is None and time.monotonic() < deadline:
            pass
    finally:
        subscriber.stop(timeout=10)  # the last acks reach Ferry before the stream closes
    error = subscriber.error
    if error is not None:
        logging.error("subscriber stopped: %s (reason %s)", error, error.reason)
        return 1
    if not done.is_set():
        logging.error("received %d of %d distinct events in %.0fs", len(seen), expect, timeout)
        return 1
    print(json.dumps({"received": expect}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
