"""A terminal that reads well: coloured text log lines on a real terminal (a pty), JSON lines when
asked or when not a terminal, nothing but the report on stdout, and a progress bar that log lines
print above."""
from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
import time

import pytest

from lib.report import logs, progress
from lib.report.logs import setup_logging
from lib.report.progress import RestoreProgress
from tests.support import REPO_ROOT


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.set_live_writer(None)


def verify_on_a_terminal(replica, env) -> tuple[int, str, str]:
    """Run jobs.verify --json with stderr on a pseudo-terminal; (exit code, stdout, terminal text)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.verify", "--config", str(replica.config_path), "--json",
                             "--max-age", "7d"], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=60), stdout, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_coloured_text_lines_and_stdout_only_the_report(v3_file_replica, clone, restorable_env):
    code, stdout, terminal = verify_on_a_terminal(clone(v3_file_replica), {**restorable_env, "TERM": "xterm"})

    assert code == 0
    assert json.loads(stdout)["status"] == "ok"  # nothing else on stdout
    assert "\x1b[36mINFO\x1b[0m" in terminal and "history written" in terminal
    assert '{"ts"' not in terminal


@pytest.mark.parametrize("extra, coloured, as_json", [
    ({"NO_COLOR": "1"}, False, False),
    ({"RESTORABLE_LOG_FORMAT": "json"}, False, True),
    ({"TERM": "dumb"}, False, False),
])
def test_the_terminal_format_can_be_overridden(v3_file_replica, clone, restorable_env, extra, coloured, as_json):
    code, stdout, terminal = verify_on_a_terminal(clone(v3_file_replica),
                                                  {**restorable_env, "TERM": "xterm", **extra})

    assert code == 0 and json.loads(stdout)["status"] == "ok"
    assert ("\x1b[" in terminal) == coloured
    lines = [line for line in terminal.splitlines() if line.strip()]
    assert all(line.startswith('{"ts"') for line in lines) == as_json


def test_restorable_log_format_wins_over_log_format():
    stream = io.StringIO()
    setup_logging({"RESTORABLE_LOG_FORMAT": "text", "LOG_FORMAT": "json"}, secrets=[], stream=stream)
    logging.getLogger("lib.verify").info("hello", extra={"db": "/data/app.db"})
    assert stream.getvalue().endswith(" INFO lib.verify: hello db=/data/app.db\n")


def test_a_long_restore_draws_a_bar_and_log_lines_print_above_it(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    terminal = io.StringIO()
    setup_logging({"RESTORABLE_LOG_FORMAT": "text"}, secrets=[], stream=terminal)
    target = tmp_path / "restored.db"

    with RestoreProgress(target, "/data/app.db (s3)", 5_000_000, bar=True, stream=terminal):
        deadline = time.monotonic() + 30
        while "restoring /data/app.db (s3)" not in terminal.getvalue() and time.monotonic() < deadline:
            with open(target, "ab") as out:
                out.write(b"\0" * 100_000)
            time.sleep(0.05)
        logging.getLogger("lib.verify").warning("slow storage", extra={"stage": "restore"})

    text = terminal.getvalue()
    assert "restoring /data/app.db (s3)" in text and "━" in text
    assert "WARNING lib.verify: slow storage stage=restore" in text
    assert logs._live_writer is None  # the bar is gone and lines go straight to the stream again


def test_no_bar_where_nobody_watches():
    assert progress.wants_bar({"TERM": "xterm"}, io.StringIO()) is False
