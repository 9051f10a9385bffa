"""A memory ceiling for one RQ job: ``RESTORABLE_JOB_MEMORY`` (default 512 MiB, ``off`` to lift it).

A verification's memory does not grow with the database (``lib.fleet.sizing``), so a job
over the ceiling is a bug or a hostile replica, and it must not take the worker's machine
(and every other worker on it) down with it. The work horse watches its own resident set
size; past the ceiling it records the target it was verifying as "could not check"
(naming the ceiling and the variable) and exits at once. RQ retries the job once, which
goes on with the batch's next target; a job that exceeds again is failed and its
remaining targets are inconclusive with the same reason. Never a "failed" verdict.

The RSS counted is the horse's own as the kernel reports it, including the pages it
shares with the worker it was forked from (the preloaded modules, ~80 MB).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from typing import Callable, Mapping

from lib.errors import ConfigError
from lib.fleet.sizing import TARGET_MEMORY_BYTES

log = logging.getLogger(__name__)

ENV_JOB_MEMORY = "RESTORABLE_JOB_MEMORY"

POLL_SECONDS = 0.1

EXIT_CODE = 75  # the horse's exit status when it stopped itself over the ceiling

_UNITS = {"": 1 << 20, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}  # a bare number is MiB

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


def ceiling_bytes(environ: Mapping[str, str]) -> int | None:
    """``$RESTORABLE_JOB_MEMORY`` in bytes (``512MiB``, ``1GiB``, ``768`` = MiB); None for ``off``.

    :raises ConfigError: not a size.
    """
    raw = (environ.get(ENV_JOB_MEMORY) or "").strip()
    if not raw:
        return TARGET_MEMORY_BYTES
    if raw.lower() in ("off", "none"):
        return None
    match = _SIZE.match(raw)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{ENV_JOB_MEMORY}={raw!r}: expected a size such as 512MiB or 1GiB (or off)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def resident_bytes() -> int:
    """This process's resident set size now (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Guard:
    """While entered, a thread checks the RSS every ``POLL_SECONDS``; past ``ceiling`` it calls
    ``exceeded(rss)`` (which records what the job knows) and ends the process with ``EXIT_CODE``."""

    def __init__(self, ceiling: int | None, exceeded: Callable[[int], None]):
        self.ceiling, self.exceeded = ceiling, exceeded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Guard":
        if self.ceiling is not None:
            self._check()  # a horse may start over it
            self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._check()

    def _check(self) -> None:
        rss = resident_bytes()
        if rss > self.ceiling:
            log.error("job memory %d MiB is over the ceiling of %d MiB (%s): stopping this job",
                      rss >> 20, self.ceiling >> 20, ENV_JOB_MEMORY)
            try:
                self.exceeded(rss)
            finally:
                os._exit(EXIT_CODE)


def over_ceiling_message(rss: int, ceiling: int) -> str:
    return (f"the worker's job used {rss >> 20} MiB, over its memory ceiling of {ceiling >> 20} MiB "
            f"({ENV_JOB_MEMORY}); raise it, or give the worker more memory")
