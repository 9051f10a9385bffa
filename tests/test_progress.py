"""Long restores log their progress on stderr, at a bounded rate, and never on stdout."""
from __future__ import annotations

import logging

from lib.report.progress import RestoreProgress
from tests.test_signals import wait_until


def progress_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "restorable.progress"]


def test_progress_lines_report_growth_at_most_once_per_interval(tmp_path, caplog, capsys):
    target = tmp_path / "restored.db"
    caplog.set_level(logging.INFO, logger="restorable.progress")
    interval = 0.2
    with RestoreProgress(target, "/data/app.db (s3)", 50_000_000, interval=interval, bar=False):
        for megabytes in range(1, 5):
            with open(target, "ab") as out:
                out.write(b"\0" * 1_000_000)
            # the next write waits for a line that saw this one (a loaded machine only delays it)
            seen = f"{megabytes:.1f} MB written"
            assert wait_until(lambda: any(seen in r.getMessage() for r in progress_records(caplog)), timeout=30)
    records = progress_records(caplog)
    gaps = [b.created - a.created for a, b in zip(records, records[1:])]
    assert len(records) >= 4 and min(gaps) >= interval * 0.9, gaps  # never more than one line per interval
    line = records[-1].getMessage()
    assert line.startswith("restoring /data/app.db (s3): ")
    assert "MB written" in line and "MB/s" in line and "50.0 MB compressed" in line
    assert capsys.readouterr().out == ""


def test_a_short_restore_logs_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="restorable.progress")
    with RestoreProgress(tmp_path / "x.db", "quick", 10, interval=5, bar=False):
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
    with RestoreProgress(target, "app", 1_000_000, interval=0.2, bar=False):
        with open(target, "wb") as out:
            out.write(data[: len(data) // 4])
        assert wait_until(lambda: progress_records(caplog), timeout=30)
    line = progress_records(caplog)[-1].getMessage()
    assert f"of ~{len(data) / 1e6:.1f} MB" in line and "s left" in line
