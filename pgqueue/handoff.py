"""Hand-off: a worker's slots, and the keys that tell a job the jobs trigger handed it from a
forged NOTIFY.

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
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import queries
from .db import translate_errors
from .execution import Job

if TYPE_CHECKING:
    from .lease import Registration

log = logging.getLogger("pgqueue.worker")

# Retired keys kept: a hand-off is signed before its producer commits, so one may reach the
# worker a reconnection or two after its slot's key was replaced.
KEPT_KEYS = 4
_BLOCK = 64  # SHA-256's block size: HMAC pads the key to it
_HEX_DIGEST = 64
# At most this many free slots are offered for hand-off at a time: enough for a burst to
# skip the claim, few enough that offering them costs nothing (jobs beyond go the usual way).
HANDOFF_SLOTS = 8


@dataclass
class _Key:
    # SHA-256 already fed the key XORed with HMAC's inner and outer pad: HMAC is then two
    # copies and updates, where hmac.new() costs ~100 us on a cold wake-up path (OpenSSL
    # sets up a MAC context per call)
    inner: Any
    outer: Any
    # the highest hand-off count seen per slot
    seen: dict[int, int] = field(default_factory=dict)

    def hexdigest(self, body: bytes) -> str:
        inner = self.inner.copy()
        inner.update(body)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return str(outer.hexdigest())


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
        padded = secrets.token_bytes(32).ljust(_BLOCK, b"\0")
        inner, outer = bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
        key = _Key(hashlib.sha256(inner), hashlib.sha256(outer))
        self._keys = [key, *self._keys[: KEPT_KEYS - 1]]
        return inner, outer

    def verify(self, payload: str) -> Handoff | None:
        """The hand-off in ``payload`` if pgqueue's trigger signed it for us and it was not
        seen before; None for anything else (forged, replayed, malformed)."""
        signature, body = payload[:_HEX_DIGEST], payload[_HEX_DIGEST:].encode()
        for index, key in enumerate(self._keys):
            if not hmac.compare_digest(key.hexdigest(body), signature):
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


class HandoffSlots:
    """One worker's side of the hand-off: its channel, its slots in worker_slots, how many
    of them it offers now (less one for each job handed to it since), and its keys."""

    def __init__(self, worker_id: str, slots: int, synchronous_commit: str) -> None:
        self.worker_id = worker_id
        self.channel = f"pgqueue_worker_{worker_id.replace('-', '')}"
        self.slots = min(slots, HANDOFF_SLOTS)
        self.offered = 0
        self.keys = HandoffKeys()
        self._durable = {"synchronous_commit": synchronous_commit}

    def listen(self, listener: psycopg.Connection[Any]) -> None:
        listener.execute(
            sql.SQL(queries.get("worker_listen_handoff")).format(
                channel=sql.Identifier(self.channel)
            )
        )

    def create(
        self,
        conn: psycopg.Connection[Any],
        key: tuple[bytes, bytes],
        listener: psycopg.Connection[Any],
        worker: Registration,
    ) -> None:
        """(Re)create our slots, none offered, under ``key`` (from ``keys.new_key()``), for
        the jobs ``worker`` runs, handed over through ``listener``'s session."""
        key_inner, key_outer = key
        conn.execute(
            queries.get("create_slots"),
            {
                "worker_id": self.worker_id,
                "listener_pid": listener.info.backend_pid,
                "slots": self.slots,
                "channel": self.channel,
                "queues": worker.queues,
                "tasks": worker.unlimited_tasks,
                "at_most_once": worker.at_most_once,
                "key_inner": key_inner,
                "key_outer": key_outer,
            },
        )
        self.offered = 0

    def offer(self, conn: psycopg.Connection[Any], n: int) -> None:
        """Offer ``n`` free slots for hand-off (withdraw the rest), if not offered already.

        Offers are topped up once half of them were taken, not after every hand-off, so a
        steady trickle of jobs costs this round trip every few jobs. Sent with
        claim_settings: a lost offer costs nothing, so its commit does not wait for the WAL
        flush either.
        """
        if n == self.offered or n > self.offered >= max(1, n // 2):
            return
        with conn.pipeline():
            conn.execute(queries.get("claim_settings"), self._durable)
            conn.execute(queries.get("offer_slots"), {"worker_id": self.worker_id, "n": n})
        self.offered = n

    def withdraw(self, conn: psycopg.Connection[Any]) -> int:
        """In a claim's pipeline: claiming means not idle, so no job is to be handed to us
        meanwhile. Returns what was offered, for ``restore`` if that transaction fails."""
        offered = self.offered
        if offered:
            conn.execute(queries.get("offer_slots"), {"worker_id": self.worker_id, "n": 0})
            self.offered = 0
        return offered

    def restore(self, offered: int) -> None:
        self.offered = offered

    def taken(self) -> None:
        """A job came through one of the slots we offered."""
        self.offered = max(0, self.offered - 1)


def handed_job(
    handoff: Handoff,
    conn: psycopg.Connection[Any],
    decode: Callable[[str], list[Job]],
) -> Job | None:
    """The job of a verified hand-off; None if it cannot be decoded (a row written by hand),
    in which case it ends FAILURE with DecodeError, as a claimed one would: through the
    claim's own decoder (``decode``). The trigger signed the document, so its id and attempt
    can be trusted to fence that outcome."""
    if handoff.document is not None:
        try:
            return Job.from_claim(handoff.document)
        except (ValueError, TypeError, OverflowError):
            document = f"[{json.dumps(handoff.document)}]"
    else:  # not even JSON Python can read: the database reads it
        with translate_errors():
            (entry,) = queries.one(
                conn.execute(queries.get("handoff_job_document"), {"body": handoff.body})
            )
        document = f"[{entry}]"
    jobs = decode(document)
    return jobs[0] if jobs else None
