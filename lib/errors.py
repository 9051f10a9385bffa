"""Typed errors, each mapped to the process exit code in one place.

Exit codes (also listed in every job's ``--help``):

====  ==========================================================
0     verified (warnings allowed)
1     verification failed: the backup is bad or stale
2     could not verify: storage unreachable, credentials refused,
      timeout, a listing that kept changing under us
3     usage or config error
4     unexpected internal error
130   interrupted (SIGINT / SIGTERM)
====  ==========================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INCONCLUSIVE = 2
EXIT_CONFIG = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    verified (warnings allowed)
  1    verification failed: the backup is bad or stale
  2    could not verify: storage unreachable, credentials refused, timeout
  3    usage or config error
  4    unexpected internal error
  130  interrupted"""


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
