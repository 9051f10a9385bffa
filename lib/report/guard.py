"""``never_raises``: reporting steps log their failures instead of raising them.

Reporting runs after the verdict is known; nothing it does may change that verdict or
the exit code, and one channel's trouble must not silence another.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

log = logging.getLogger("lib.report.notify")

_T = TypeVar("_T")


def never_raises(default: Any = None) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Log (with traceback) instead of raising; return ``default`` on failure."""

    def wrap(method: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> _T:
            try:
                return method(*args, **kwargs)
            except Exception:
                log.exception("reporting step %s failed; verification result unchanged", method.__name__,
                              extra={"stage": "notify"})
                return default

        return guarded

    return wrap
