"""Task states, with Celery's names and meanings."""

PENDING = "PENDING"  # unknown id, or queued and not started yet
STARTED = "STARTED"
RETRY = "RETRY"  # failed, waiting for its next attempt
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"  # revoked or expired before it ran
IGNORED = "IGNORED"  # the task raised Ignore

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, IGNORED})
UNREADY_STATES = frozenset({PENDING, STARTED, RETRY})
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
ALL_STATES = READY_STATES | UNREADY_STATES
