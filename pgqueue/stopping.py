"""How a worker is asked to stop: a warm shutdown from stop() or a first SIGTERM/SIGINT, a
cold one from a second signal; and the pipe that wakes its loop's select() at once."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pgqueue.worker")


class StopSwitch:
    """The stop request of one worker and its wake-up pipe."""

    def __init__(self) -> None:
        self.stopping = False
        self.since = 0.0  # monotonic time of the first stop request
        self._signals = 0
        self._kill: Callable[[], None] | None = None
        # Written by signal handlers and stop() so that select() returns at once.
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)

    def install_signals(self, kill: Callable[[], None]) -> None:
        """Handle SIGTERM and SIGINT; ``kill`` ends the running jobs at once (cold)."""
        self._kill = kill
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning(
                "%s received, warm shutdown: finishing running tasks "
                "(send it again to exit at once)",
                signal.Signals(signum).name,
            )
            self.stop()
            return
        log.warning("second signal: cold shutdown, leaving running jobs to be recovered")
        if self._kill is not None:
            self._kill()
        os._exit(1)

    def stop(self) -> None:
        if not self.stopping:
            self.since = time.monotonic()
        self.stopping = True
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_fd, 1024)

    def close(self) -> None:
        os.close(self.wake_fd)
        os.close(self._wake_w)
