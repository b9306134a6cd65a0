"""Publish COUNT events to TOPIC with ids ID_PREFIX-i and keys k{i % 8}.

PUBLISH_MODE=unary (the default) publishes one call at a time (FerryPublisher);
PUBLISH_MODE=stream pipelines them all on one PublishStream (FerryStreamPublisher) and
waits for every answer. Prints {"published": COUNT} and exits 0; exits 1 on an error the
client does not retry. A secured Ferry is reached as FERRY_TLS_CA, FERRY_TLS_CLIENT_CERT,
FERRY_TLS_CLIENT_KEY, FERRY_TLS_SERVER_NAME and FERRY_TOKEN_FILE say (Credentials.from_env).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from ferry_client import Credentials, FerryError, FerryPublisher, FerryStreamPublisher


def publish_unary(topic: str, count: int, prefix: str) -> None:
    with FerryPublisher(credentials=Credentials.from_env()) as publisher:  # FERRY_ADDR
        for i in range(count):
            publisher.publish(topic, f"payload-{i}", key=f"k{i % 8}", event_id=f"{prefix}-{i}")


def publish_stream(topic: str, count: int, prefix: str) -> None:
    # FERRY_ADDR; close() waits for every answer
    with FerryStreamPublisher(credentials=Credentials.from_env()) as publisher:
        futures = [
            publisher.publish(topic, f"payload-{i}", key=f"k{i % 8}", event_id=f"{prefix}-{i}")
            for i in range(count)
        ]
        for future in futures:
            future.result()  # raises the FerryError of a publish that failed for good


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    topic, count, prefix = os.environ["TOPIC"], int(os.environ["COUNT"]), os.environ["ID_PREFIX"]
    mode = os.environ.get("PUBLISH_MODE", "unary")
    publish = {"unary": publish_unary, "stream": publish_stream}.get(mode)
    if publish is None:
        logging.error("PUBLISH_MODE must be unary or stream, not %r", mode)
        return 2
    try:
        publish(topic, count, prefix)
    except FerryError as error:
        logging.error("publish failed: %s (reason %s)", error, error.reason)
        return 1
    print(json.dumps({"published": count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
