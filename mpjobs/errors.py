"""One exception hierarchy, so callers can catch everything mpjobs raises with one clause."""

from __future__ import annotations

from datetime import timedelta


class MpjobsError(Exception):
    """Base class of every error mpjobs raises on purpose."""


class HomeError(MpjobsError):
    """The home cannot be created or read, does not exist (for commands that only look),
    or is named twice, differently (`App(home=X)` run with `--home Y`)."""


class UnsafeHomeError(HomeError):
    """The home, or a file in it, can be written by other users.

    Jobs are stored as pickles and pickles run code when loaded, so a store that another
    user can write to is a way for that user to run code as whoever runs the workers.
    """


class StoreError(MpjobsError):
    """The store file is corrupt, foreign, from a newer mpjobs, or cannot be used."""


class OwnerAlive(StoreError):
    """A dead-looking owner still holds its liveness (or its session is still closing):
    it is not settled now, and whoever asked tries again later."""


class NotFoundError(MpjobsError, LookupError):
    """A schedule (or other row) named by a handle is no longer in the store.

    Also a LookupError, which is what these handles raised before it existed, so
    existing `except LookupError` code keeps working.
    """


class SerializationError(MpjobsError):
    """A callable, its arguments or its result cannot be pickled."""


class ConfigError(MpjobsError):
    """A config file or an option is invalid; the message names the file, entry and field."""


class JobNotCompletedError(MpjobsError):
    """`Job.result()` was asked for before the job reached a terminal state."""


class JobCancelledError(MpjobsError):
    """The job was cancelled, so it has no result."""


class JobFailedError(MpjobsError):
    """The job ended FAILED, TIMEOUT or PERMANENTLY_FAILED.

    `original` is the exception raised in the worker when it could be unpickled here,
    and `remote_traceback` is the worker's traceback text either way.
    """

    def __init__(
        self,
        message: str,
        *,
        status: str = "FAILED",
        original: BaseException | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.original = original
        self.remote_traceback = remote_traceback


class WaitTimeout(MpjobsError, TimeoutError):
    """`Job.wait(timeout=...)` ran out of time before the job was done."""


class SoftTimeout(MpjobsError):
    """Raised inside a job when its `soft_timeout` has passed: catch it to clean up.

    The hard `timeout`, if set, still ends the job (and its process tree) later. An
    async job sees a cancellation of its task instead (asyncio's only safe way in);
    a cancellation that ends the job is recorded as this exception.
    """


class Retry(MpjobsError):
    """Raise inside a job to ask for another attempt now, whatever `retry_on` says.

    `delay` (seconds, "30s" or a timedelta; None: the task's backoff) is when the next
    attempt is due; the worker reads it (rules/outcomes.py), and a delay it cannot read
    ends the job FAILED, saying so. It still counts against `max_attempts`: once they
    are used up the job ends FAILED with this exception's text, so the reason is kept.
    """

    def __init__(self, reason: str = "", *, delay: float | str | timedelta | None = None) -> None:
        super().__init__(reason or "retry requested")
        self.reason = reason
        self.delay = delay
