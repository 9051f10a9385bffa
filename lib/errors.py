"""Typed errors, and the exit codes they map to (``EXIT_CODES``, the one table of them)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INCONCLUSIVE = 2
EXIT_CONFIG = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

# (code, outcome in a log line, line in every job's --help): the one table of exit codes.
EXIT_CODES = (
    (EXIT_OK, "verified", "verified (warnings allowed)"),
    (EXIT_FAILED, "verification failed", "verification failed: the backup is bad or stale"),
    (EXIT_INCONCLUSIVE, "could not verify", "could not verify: storage unreachable, credentials refused, timeout"),
    (EXIT_CONFIG, "usage or config error", "usage or config error"),
    (EXIT_INTERNAL, "internal error", "unexpected internal error"),
    (EXIT_INTERRUPTED, "interrupted", "interrupted"),
)

EXIT_CODES_HELP = "\n".join(["exit codes:", *(f"  {code:<4} {text}" for code, _, text in EXIT_CODES)])


def describe_exit_code(code: int) -> str:
    """The outcome a job's exit ``code`` stands for (``could not verify``), or ``exit code N``."""
    return next((outcome for number, outcome, _ in EXIT_CODES if number == code), f"exit code {code}")


class RestorableError(Exception):
    """Base of every error restorable raises on purpose."""

    exit_code = EXIT_INTERNAL


class ConfigError(RestorableError):
    """The configuration or the command line is wrong; the message names the key and the fix."""

    exit_code = EXIT_CONFIG


class StorageError(RestorableError):
    """Talking to the object store failed; we could not tell whether the backup is good."""

    exit_code = EXIT_INCONCLUSIVE


class StorageUnavailable(StorageError):
    """Endpoint unreachable, credentials refused, bucket missing, throttled past our retries."""


class ObjectNotFound(StorageError):
    """A listed object is gone when read (usually Litestream's own retention racing us)."""

    def __init__(self, key: str):
        super().__init__(f"object {key} disappeared between listing and reading")
        self.key = key


class CorruptObject(RestorableError):
    """An object was read in full and its content is invalid (a verdict about the backup)."""

    exit_code = EXIT_FAILED

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class Interrupted(RestorableError):
    """SIGINT or SIGTERM arrived; the run stops, cleans up and exits 130."""

    exit_code = EXIT_INTERRUPTED


class DeadlineExceeded(StorageError):
    """The run's maximum runtime passed; the result is inconclusive."""
