"""The content fingerprint of a logged event: tells a retry from a conflicting reuse of its id.

Null and empty differ: a null key or payload digests as a length no real part can have.
"""

from __future__ import annotations

import hashlib

_NULL = (2**64 - 1).to_bytes(8, "little")


def event_digest(topic: str, key: bytes | None, payload: bytes | None, headers: str) -> bytes:
    """`headers` is the event's headers as stored (`store.encode_headers`)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (topic.encode(), key, payload):
        if part is None:
            h.update(_NULL)
        else:
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    h.update(headers.encode())
    return h.digest()
