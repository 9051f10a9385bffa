"""Logging for every job: one handler on stderr, text for people, JSON lines for Railway.

* Logs go to **stderr**; stdout is reserved for the report (``--json``).
* ``RESTORABLE_LOG_FORMAT=json`` or ``text`` chooses the format (``LOG_FORMAT`` is read
  when it is unset); unset (or ``auto``) means JSON lines when stderr is not a terminal
  (Railway, Docker, a pipe) and text on a terminal.
* Text lines are coloured (level, dimmed time, logger and keys) when stderr is a real
  terminal device whose ``TERM`` is not ``dumb``; ``NO_COLOR`` turns colour off and
  ``FORCE_COLOR`` on (https://no-color.org, https://force-color.org).
* While a progress bar is drawn (``lib.report.progress``), lines are printed above it.
* ``LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``; default ``INFO``).
* Context travels in ``extra=``: ``log.info("restored", extra={"db": path, "stage": "restore"})``.
  JSON lines carry each such field as a key (``db``, ``stage``, ``replica``...), text
  lines append them as ``key=value``.
* A ``ScrubFilter`` on the handler removes known secret values and URL credentials from
  every record (message, arguments, extra fields and traceback) before it is written.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, Mapping, TextIO

from lib.report.endpoints import output_secrets
from lib.report.scrub import Scrubber
from lib.units import format_iso

DEFAULT_LEVEL = "INFO"

# Third-party loggers that are noisy at INFO; they follow LOG_LEVEL only when it is DEBUG.
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiosmtpd", "mail.log", "apscheduler", "apprise")

FORMAT_VARS = ("RESTORABLE_LOG_FORMAT", "LOG_FORMAT")

# ANSI SGR codes: red for errors, yellow for warnings, cyan for info, dim for the rest.
_LEVEL_COLOURS = {"CRITICAL": "1;31", "ERROR": "31", "WARNING": "33", "INFO": "36", "DEBUG": "2"}

_DIM = "2"

# Where records go instead of the stream while a progress bar owns the terminal's last line.
_live_writer = None

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Context fields shown first, in this order, in both formats.
_CONTEXT_ORDER = ("db", "replica", "stage")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``extra=``, context fields first."""
    fields = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")}
    ordered = {k: fields.pop(k) for k in _CONTEXT_ORDER if k in fields}
    ordered.update(sorted(fields.items()))
    return ordered


def _timestamp(record: logging.LogRecord) -> str:
    return format_iso(datetime.fromtimestamp(record.created, tz=timezone.utc))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, and exc when any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(extra_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def _paint(code: str, text: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


def _plain(code: str, text: str) -> str:
    return text


class TextFormatter(logging.Formatter):
    """``2024-05-01T10:00:00.000Z WARNING lib.history: message db=... stage=...``."""

    paint = staticmethod(_plain)

    def format(self, record: logging.LogRecord) -> str:
        paint = self.paint
        level = paint(_LEVEL_COLOURS.get(record.levelname, _DIM), record.levelname)
        line = f"{paint(_DIM, _timestamp(record))} {level} {paint(_DIM, record.name + ':')} {record.getMessage()}"
        context = " ".join(f"{paint(_DIM, k + '=')}{v}" for k, v in extra_fields(record).items())
        if context:
            line = f"{line} {context}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line


class ColourTextFormatter(TextFormatter):
    """``TextFormatter``'s line with a coloured level and dimmed time, logger and keys."""

    paint = staticmethod(_paint)


class ScrubFilter(logging.Filter):
    """Rewrites each record so no known secret or URL credential survives into any output.

    The message is rendered with its arguments first (so a secret passed as an argument is
    caught), the traceback is rendered to text and scrubbed, and string extra fields are
    scrubbed in place. Always returns True: it changes records, it never drops them.
    """

    def __init__(self, scrubber: Scrubber):
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.scrubber.text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrubber.text(record.exc_text)
        record.exc_info = None  # the rendered, scrubbed exc_text is what gets written
        if record.stack_info:
            record.stack_info = self.scrubber.text(record.stack_info)
        for key, value in extra_fields(record).items():
            setattr(record, key, self.scrubber.obj(value) if isinstance(value, (str, dict, list, tuple)) else value)
        return True


def format_choice(environ: Mapping[str, str]) -> str:
    """``json``, ``text`` or ``auto``, from the first of ``FORMAT_VARS`` that is set."""
    for name in FORMAT_VARS:
        value = (environ.get(name) or "").strip().lower()
        if value:
            return value
    return "auto"


def is_json_format(environ: Mapping[str, str], stream: TextIO) -> bool:
    """JSON lines unless the format is ``text``, or ``auto`` and ``stream`` is a terminal."""
    choice = format_choice(environ)
    if choice == "json":
        return True
    if choice == "text":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def is_terminal_device(stream: TextIO) -> bool:
    """A real terminal (not merely an object claiming ``isatty``): its file descriptor is a tty."""
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def wants_colour(environ: Mapping[str, str], stream: TextIO) -> bool:
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    return is_terminal_device(stream) and (environ.get("TERM") or "") != "dumb"


def set_live_writer(writer) -> None:
    """While ``writer`` is set (a callable taking one formatted line), log lines go to it."""
    global _live_writer
    _live_writer = writer


def parse_level(value: str | None) -> int | None:
    """A ``LOG_LEVEL`` value as a logging level; None when it names no level."""
    name = (value or DEFAULT_LEVEL).strip().upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else None


class _RestorableHandler(logging.StreamHandler):
    """Marks the handler this module installed, so a second setup replaces it; prints above a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        writer = _live_writer
        if writer is None:
            super().emit(record)
            return
        try:
            writer(self.format(record))
        except Exception:
            self.handleError(record)


def setup_logging(environ: Mapping[str, str], *, secrets: list[str], stream: TextIO | None = None) -> None:
    """Configure the root logger once per run; safe to call again (it replaces its own handler).

    :param secrets: secret values to scrub, usually ``Config.secrets()``; secrets named
        by the environment (``AWS_SECRET_ACCESS_KEY``, ``SMTP_URL``'s password, ...) are
        added here.
    :param stream: where lines go; stderr (looked up at call time) when omitted.
    """
    stream = stream if stream is not None else sys.stderr
    level = parse_level(environ.get("LOG_LEVEL"))
    handler = _RestorableHandler(stream)
    if is_json_format(environ, stream):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ColourTextFormatter() if wants_colour(environ, stream) else TextFormatter())
    handler.addFilter(ScrubFilter(Scrubber.from_environ(environ, [*secrets, *output_secrets(environ)])))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RestorableHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else logging.INFO)
    quiet = logging.DEBUG if level == logging.DEBUG else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    if level is None:
        logging.getLogger(__name__).warning(
            "LOG_LEVEL=%s is not a level; using INFO (choose DEBUG, INFO, WARNING or ERROR)",
            environ.get("LOG_LEVEL"),
        )
