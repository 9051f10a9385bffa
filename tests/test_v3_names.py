"""v0.3 names have one home (``lib/litestream/v3/layout.py``): every format has its parse, and they agree."""
from __future__ import annotations

from hypothesis import given, strategies as st

from lib.litestream.v3.layout import (
    Position,
    format_position,
    format_snapshot_name,
    format_wal_segment_name,
    generation_of,
    parse_position,
    parse_snapshot_name,
    parse_wal_segment_name,
    segment_order,
    wal_key,
)

U32 = st.integers(0, 0xFFFFFFFF)
GENERATIONS = st.text("0123456789abcdef", min_size=16, max_size=16)


@given(U32)
def test_snapshot_names_round_trip(index):
    assert parse_snapshot_name(format_snapshot_name(index)) == index


@given(U32, U32)
def test_wal_segment_names_round_trip(index, offset):
    assert parse_wal_segment_name(format_wal_segment_name(index, offset)) == (index, offset)


@given(GENERATIONS, U32, st.integers(0, 1 << 40))
def test_positions_round_trip(generation, index, offset):
    position = Position(generation, index, offset)
    assert str(position) == format_position(generation, index, offset)
    assert parse_position(str(position)) == position


@given(GENERATIONS, U32, U32)
def test_a_segment_key_names_its_generation_and_order(generation, index, offset):
    key = wal_key("backups/app.db/generations/", generation, index, offset)
    assert generation_of(key, "backups/app.db/generations/") == generation
    assert segment_order(key) == (index, offset)


@given(st.text())
def test_other_names_parse_to_nothing(name):
    if not name.endswith((".lz4",)) and "/" not in name:
        assert parse_snapshot_name(name) is None and parse_wal_segment_name(name) is None
    assert parse_position(name) is None or str(parse_position(name)) == name


def test_near_misses_are_not_names():
    for name in ("00000001.snapshot.lz4.tmp", "0000001.snapshot.lz4", "0000000A.snapshot.lz4",
                 "00000001_00000000.wal", "00000001-00000000.wal.lz4", " 00000001_00000000.wal.lz4"):
        assert parse_snapshot_name(name) is None and parse_wal_segment_name(name) is None
    assert segment_order("generations/x/wal/readme.txt") == (-1, -1)
    assert generation_of("elsewhere/0123456789abcdef/wal/x", "generations/") == ""
