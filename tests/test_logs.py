import io
import json
import logging
import subprocess
import sys
import textwrap

import pytest

from lib.report.logs import is_json_format, setup_logging
from tests.support import REPO_ROOT, restorable_env


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_when_not_a_terminal():
    stream = io.StringIO()
    setup_logging({}, secrets=[], stream=stream)
    logging.getLogger("lib.verify").info("restored bytes=%d", 4096, extra={"db": "/data/app.db", "stage": "restore"})

    [line] = lines(stream)
    record = json.loads(line)
    assert record["msg"] == "restored bytes=4096"
    assert record["level"] == "info"
    assert record["logger"] == "lib.verify"
    assert record["db"] == "/data/app.db"
    assert record["stage"] == "restore"
    assert record["ts"].endswith("Z")


def test_text_on_a_terminal():
    stream = Terminal()
    setup_logging({}, secrets=[], stream=stream)
    logging.getLogger("lib.verify").warning("stale", extra={"db": "/data/app.db", "stage": "checks"})

    [line] = lines(stream)
    assert line.endswith(" WARNING lib.verify: stale db=/data/app.db stage=checks")


@pytest.mark.parametrize("value, stream, expected", [
    ("json", Terminal(), True), ("text", io.StringIO(), False), ("JSON", Terminal(), True),
    ("", io.StringIO(), True), ("auto", Terminal(), False),
])
def test_log_format_setting(value, stream, expected):
    assert is_json_format({"LOG_FORMAT": value}, stream) is expected


def test_other_extra_fields_are_kept():
    stream = io.StringIO()
    setup_logging({"LOG_FORMAT": "json"}, secrets=[], stream=stream)
    logging.getLogger("x").info("listed", extra={"db": "a.db", "stage": "discover", "objects": 12})

    record = json.loads(lines(stream)[0])
    assert (record["db"], record["stage"], record["objects"]) == ("a.db", "discover", 12)


def test_exceptions_stay_on_one_json_line():
    stream = io.StringIO()
    setup_logging({"LOG_FORMAT": "json"}, secrets=[], stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("restore failed", extra={"db": "a.db", "stage": "restore"})

    [line] = lines(stream)
    record = json.loads(line)
    assert "RuntimeError: boom" in record["exc"]
    assert record["level"] == "error"


def test_log_level_setting():
    stream = io.StringIO()
    setup_logging({"LOG_LEVEL": "warning", "LOG_FORMAT": "text"}, secrets=[], stream=stream)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")

    assert [line.split(": ", 1)[1] for line in lines(stream)] == ["shown"]


def test_unknown_log_level_falls_back_to_info_with_a_warning():
    stream = io.StringIO()
    setup_logging({"LOG_LEVEL": "chatty", "LOG_FORMAT": "json"}, secrets=[], stream=stream)
    logging.getLogger("x").info("shown")

    messages = [json.loads(line)["msg"] for line in lines(stream)]
    assert "LOG_LEVEL=chatty is not a level" in messages[0]
    assert messages[1] == "shown"


def test_setting_up_twice_keeps_one_handler():
    first, second = io.StringIO(), io.StringIO()
    setup_logging({}, secrets=[], stream=first)
    setup_logging({}, secrets=[], stream=second)
    logging.getLogger("x").warning("once")

    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_noisy_libraries_are_quiet_at_info():
    stream = io.StringIO()
    setup_logging({}, secrets=[], stream=stream)
    logging.getLogger("botocore.endpoint").info("sending request")

    assert stream.getvalue() == ""


JOB = textwrap.dedent("""
    import logging, os
    from lib.report.logs import setup_logging
    setup_logging(os.environ, secrets=[])
    logging.getLogger("lib.verify").info("verified", extra={"db": "/data/app.db", "stage": "report"})
    print('{"status": "ok"}')
""")


def test_logs_go_to_stderr_and_stdout_keeps_the_report():
    done = subprocess.run([sys.executable, "-c", JOB], cwd=REPO_ROOT, env=restorable_env(),
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "ok"}
    [line] = done.stderr.splitlines()
    assert json.loads(line)["stage"] == "report"  # stderr is a pipe here, hence JSON
