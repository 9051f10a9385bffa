"""The recovery block, drill and vault as report, status and email lines."""
from __future__ import annotations

from lib.recovery.render import mail_facts, report_lines, status_lines

RECOVERY = {"earliest": "2026-12-02T10:00:00.000Z", "latest": "2026-12-03T09:59:00.000Z", "window_seconds": 86340.0,
            "rpo_seconds": 60.0, "rpo_from": "newest restore point", "restore_seconds": 1.25,
            "restore_bytes": 123456, "spans": [{"label": "level 0", "earliest": "2026-12-03T09:00:00.000Z",
                                                "latest": "2026-12-03T09:59:00.000Z", "points": 60,
                                                "granularity_seconds": 60.0}]}


def test_report_lines_state_window_rpo_restore_time_drill_and_vault():
    lines = report_lines({"recovery": RECOVERY,
                          "drill": {"kind": "random", "target": "2026-12-02T14:00:00.000Z", "seed": 7,
                                    "status": "failed"},
                          "vault": {"keep": {"uploaded": "2026-12-03", "kept": [{}, {}]},
                                    "check": {"day": "2026-12-01", "status": "ok"}}})
    assert lines == [
        "window 2026-12-02T10:00:00.000Z .. 2026-12-03T09:59:00.000Z (23h59m); RPO 1m; restore 1s250ms, "
        "123,456 bytes downloaded",
        "drill random 2026-12-02T14:00:00.000Z, seed 7: failed",
        "vault: kept 2026-12-03; 2 entries; re-read 2026-12-01: ok",
    ]
    assert report_lines({}) == []


def test_status_lines_show_spans_last_drills_and_vault_entries():
    lines = status_lines({"window": RECOVERY, "drills": {"oldest": {"status": "ok", "at": "A", "target": "T"}},
                          "vault": {"location": "file:///v/db/", "entries": [
                              {"day": "2026-12-03", "bytes": 4096, "sha256": "ab" * 32,
                               "restore_point": {"position": "g/00000001:0"}, "last_check": None}]}})
    text = "\n".join(lines)
    assert "recovery window: 2026-12-02T10:00:00.000Z .. 2026-12-03T09:59:00.000Z" in text
    assert "level 0: 2026-12-03T09:00:00.000Z .. 2026-12-03T09:59:00.000Z, 60 point(s), every ~1m" in text
    assert "last oldest drill: ok at A (target T)" in text
    assert "2026-12-03  4,096 bytes  sha256 abababababab  point g/00000001:0  last re-read never" in text


def test_mail_facts():
    rows = dict(mail_facts({"recovery": RECOVERY, "drill": {"kind": "oldest", "status": "ok", "target": "T"}}))
    assert rows["RPO (data at risk)"] == "1m" and rows["oldest drill"] == "ok (T)"
    assert rows["restore took"] == "1s250ms, 123,456 bytes"
