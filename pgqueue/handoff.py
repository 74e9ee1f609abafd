"""Hand-off keys: how a worker tells a job the jobs trigger handed it from a forged NOTIFY.

Any role that can connect may send any notification, on any channel, with any payload; a
worker's hand-off channel is no secret either. So the trigger (migration 0006) signs each
hand-off with HMAC-SHA256 under a key only the worker and the schema owner know, and counts
the hand-offs through each slot: the worker runs a handed job only when the signature checks
out and the count is new (a replayed notification carries an old one).

A key lives as long as one listening connection: every (re)connection makes a new one, and
the previous ones are kept, retired, for hand-offs committed to the old slots while the
worker reconnected. Those jobs may already have been put back in the queue by then
(release_held_jobs), so the worker gives a retired hand-off back instead of running it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

# Retired keys kept: a hand-off is signed before its producer commits, so one may reach the
# worker a reconnection or two after its slot's key was replaced.
KEPT_KEYS = 4
_BLOCK = 64  # SHA-256's block size: HMAC pads the key to it
_HEX_DIGEST = 64


@dataclass
class _Key:
    secret: bytes
    # the highest hand-off count seen per slot
    seen: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Handoff:
    """A verified hand-off: the job document, and whether its key is the current one.

    ``document`` is None when Python cannot parse the signed body (a job row written by
    hand holding a 5,000-digit number, say); ``body`` is then left for the database to read.
    """

    document: list[Any] | None
    current: bool
    body: str = ""


class HandoffKeys:
    """The keys of one worker, newest first."""

    def __init__(self) -> None:
        self._keys: list[_Key] = []

    def new_key(self) -> tuple[bytes, bytes]:
        """Retire the current key and make a new one; returns it XORed with HMAC's inner and
        outer pads, as worker_channels stores it (so SQL needs only sha256(), no extension)."""
        secret = secrets.token_bytes(32)
        self._keys = [_Key(secret), *self._keys[: KEPT_KEYS - 1]]
        padded = secret.ljust(_BLOCK, b"\0")
        return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)

    def verify(self, payload: str) -> Handoff | None:
        """The hand-off in ``payload`` if pgqueue's trigger signed it for us and it was not
        seen before; None for anything else (forged, replayed, malformed)."""
        signature, body = payload[:_HEX_DIGEST], payload[_HEX_DIGEST:].encode()
        for index, key in enumerate(self._keys):
            expected = hmac.new(key.secret, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                continue
            # Parsed only once it is known to come from the trigger.
            try:
                slot, count, document = json.loads(body)
            except (ValueError, RecursionError):
                # Not replay-checked: the job's outcome is fenced by its attempt anyway.
                return Handoff(None, current=index == 0, body=body.decode())
            if count <= key.seen.get(slot, 0):
                return None  # a replay: this slot's hand-offs are numbered in commit order
            key.seen[slot] = count
            return Handoff(document, current=index == 0)
        return None
