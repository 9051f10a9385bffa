"""What a difference between restorable's and litestream's restore of the same objects means
(lib.crosscheck.compare.judge, a pure function), and the evidence kept for a restorable bug."""
from __future__ import annotations

import json
import stat

from lib.crosscheck import compare
from lib.crosscheck.binary import Binary
from lib.crosscheck.compare import Side, judge
from lib.crosscheck.run import CrossCheck, keep_evidence

CMD = "python -m jobs.restore --db app.db --replica r -o OUT"
ROWS = {"items": 96, "events": 7}


def side(name="restorable", sha="a" * 64, integrity=(), tables=ROWS, failed=None, damage=()) -> Side:
    return Side(name, sha, list(integrity), dict(tables), failed, list(damage))


def test_identical_restores_agree():
    assert judge(side(), side("litestream"), CMD, "0.3.13") == (compare.AGREE, [])


def test_litestream_restore_malformed_while_ours_is_sound_is_a_warning_with_the_command():
    verdict, [finding] = judge(side(damage=["WAL index 00000002: frame ..."]),
                               side("litestream", sha="b" * 64, integrity=["Page 12 is never used"]), CMD, "0.3.13")
    assert verdict == compare.LITESTREAM_DAMAGED
    assert finding.severity == "warning" and finding.kind == "cross_check"
    assert "Page 12 is never used" in finding.message and CMD in finding.message and "v0.3.13" in finding.message


def test_litestream_restore_failing_while_ours_is_sound_is_a_warning():
    verdict, [finding] = judge(side(), side("litestream", sha=None, tables={}, failed="exit 1: missing initial wal "
                                            "segment"), CMD, "0.3.13")
    assert verdict == compare.LITESTREAM_DAMAGED
    assert "fails (exit 1: missing initial wal segment)" in finding.message


def test_litestream_losing_rows_past_reported_damage_is_a_warning():
    verdict, [finding] = judge(side(damage=["bad frame"]), side("litestream", sha="b" * 64, tables={"items": 90,
                                                                "events": 7}), CMD, "0.3.13")
    assert verdict == compare.LITESTREAM_LOSES_ROWS
    assert "silently loses rows (items: 90 of 96)" in finding.message and CMD in finding.message


def test_ours_unsound_while_litestreams_is_sound_is_our_bug():
    verdict, [finding] = judge(side(integrity=["Page 1408 is never used"]), side("litestream", sha="b" * 64), CMD,
                               "0.5.17")
    assert verdict == compare.RESTORABLE_DIFFERS
    assert finding.severity == "error" and finding.kind == "cross_check"
    assert "restorable bug" in finding.message and "Page 1408" in finding.message


def test_different_sound_restores_without_damage_are_our_bug():
    verdict, [finding] = judge(side(), side("litestream", sha="b" * 64), CMD, "0.3.13")
    assert verdict == compare.RESTORABLE_DIFFERS
    assert finding.severity == "error"


def test_differences_explained_by_reported_damage_are_no_new_finding():
    assert judge(side(sha=None, tables={}, failed="corrupt", damage=["corrupt"]),
                 side("litestream", sha="b" * 64), CMD, "0.5.17") == (compare.DIFFER, [])
    assert judge(side(damage=["gap"]), side("litestream", sha="b" * 64, tables={"items": 99, "events": 7}), CMD,
                 "0.3.13") == (compare.DIFFER, [])


def test_both_damaged_adds_nothing_to_the_findings_that_say_so():
    assert judge(side(sha=None, tables={}, failed="corrupt", damage=["corrupt"]),
                 side("litestream", sha=None, tables={}, failed="exit 1"), CMD, "0.5.17") == (compare.BOTH_DAMAGED, [])


def test_evidence_is_kept_private_and_names_how_to_reproduce(tmp_path):
    work = tmp_path / "work"
    (work / "frozen" / "ltx" / "0").mkdir(parents=True)
    (work / "frozen" / "ltx" / "0" / "0000000000000001-0000000000000001.ltx").write_bytes(b"x")
    (work / "restorable.db").write_bytes(b"ours")
    (work / "litestream.db").write_bytes(b"theirs")
    result = CrossCheck(compare.RESTORABLE_DIFFERS, binary=Binary("/opt/litestream", "0.5.17"), objects=1, bytes=1,
                        ours=side(), theirs=side("litestream", sha="b" * 64))
    dest = keep_evidence(work, result, tmp_path / "keep")
    assert dest.name.startswith("restorable-evidence-")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert (dest / "frozen" / "ltx" / "0" / "0000000000000001-0000000000000001.ltx").read_bytes() == b"x"
    assert (dest / "restorable.db").read_bytes() == b"ours" and (dest / "litestream.db").read_bytes() == b"theirs"
    saved = json.loads((dest / "cross_check.json").read_text())
    assert saved["status"] == compare.RESTORABLE_DIFFERS
    assert saved["reproduce"] == f"/opt/litestream restore -o OUT {(dest / 'frozen').as_uri()}"
