"""Long restores log their progress on stderr, at a bounded rate, and never on stdout."""
from __future__ import annotations

import logging
import time

from lib.report.progress import RestoreProgress


def test_progress_lines_report_growth_at_the_interval(tmp_path, caplog, capsys):
    target = tmp_path / "restored.db"
    caplog.set_level(logging.INFO, logger="restorable.progress")
    with RestoreProgress(target, "/data/app.db (s3)", 50_000_000, interval=0.2):
        for _ in range(4):
            with open(target, "ab") as out:
                out.write(b"\0" * 1_000_000)
            time.sleep(0.15)
    lines = [r.getMessage() for r in caplog.records if r.name == "restorable.progress"]
    assert 1 <= len(lines) <= 4  # at most one line per interval
    assert lines[-1].startswith("restoring /data/app.db (s3): ")
    assert "MB written" in lines[-1] and "MB/s" in lines[-1] and "50.0 MB compressed" in lines[-1]
    assert capsys.readouterr().out == ""


def test_a_short_restore_logs_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="restorable.progress")
    with RestoreProgress(tmp_path / "x.db", "quick", 10, interval=5):
        pass
    assert not [r for r in caplog.records if r.name == "restorable.progress"]


def test_once_page_one_is_written_progress_estimates_the_rest(tmp_path, caplog):
    import sqlite3

    source = tmp_path / "source.db"
    con = sqlite3.connect(source)
    con.execute("CREATE TABLE t (v BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,) for _ in range(500)])
    con.commit()
    con.close()
    data = source.read_bytes()
    target = tmp_path / "restored.db"
    caplog.set_level(logging.INFO, logger="restorable.progress")
    with RestoreProgress(target, "app", 1_000_000, interval=0.2):
        with open(target, "wb") as out:
            out.write(data[: len(data) // 4])
        time.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "restorable.progress"]
    assert lines and f"of ~{len(data) / 1e6:.1f} MB" in lines[-1] and "s left" in lines[-1]
