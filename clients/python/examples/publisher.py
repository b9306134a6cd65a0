"""Publish COUNT events to TOPIC, one call at a time, with ids ID_PREFIX-i.

Prints {"published": COUNT} and exits 0; exits 1 on an error the client does not retry.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from ferry_client import FerryError, FerryPublisher


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    topic, count, prefix = os.environ["TOPIC"], int(os.environ["COUNT"]), os.environ["ID_PREFIX"]
    with FerryPublisher() as publisher:  # FERRY_ADDR
        for i in range(count):
            try:
                publisher.publish(topic, f"payload-{i}", key=f"k{i % 8}", event_id=f"{prefix}-{i}")
            except FerryError as error:
                logging.error("publish %d failed: %s (reason %s)", i, error, error.reason)
                return 1
    print(json.dumps({"published": count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
