"""The retention policy and its vocabulary: windows, restore points to protect, decisions."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lib.config.model import ReplicaConfig
from lib.errors import ConfigError
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.storage.base import ObjectInfo
from lib.units import format_duration, format_iso


# Litestream's default `retention` (v0.3 replica.go DefaultRetention; v0.5 snapshot.retention).
DEFAULT_WINDOW_SECONDS = 24 * 3600.0

DEFAULT_KEEP_SNAPSHOTS = 1

# Objects must be older than window + margin when re-listed right before deleting, so a
# snapshot a live Litestream is writing (and host/server clock skew) is never raced.
DEFAULT_MARGIN_SECONDS = 600.0

# Litestream v0.3 checks retention every `retention-check-interval` (default 1h), so an
# object may outlive the window by that much before Litestream deletes it: no warning then.
V3_CHECK_INTERVAL_SECONDS = 3600.0

# Litestream v0.5 `l0-retention` default (5m). Its snapshot retention runs once per
# `snapshot.interval` (default 24h), so v0.5 objects get one whole window of grace.
V5_L0_RETENTION_SECONDS = 300.0

KEEP = "keep"

DELETE = "delete"

MODE_REPORT = "report"

MODE_DRY_RUN = "dry-run"

MODE_ENFORCE = "enforce"

MODE_SKIPPED = "skipped"

# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a replica keeps history, and the floor that is kept whatever its age.

    ``window_seconds`` None means retention is off (``retention: 0`` in litestream.yml):
    everything is kept. ``source`` says where the window came from, for the report.
    """

    window_seconds: float | None = DEFAULT_WINDOW_SECONDS
    keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS
    margin_seconds: float = DEFAULT_MARGIN_SECONDS
    source: str = "Litestream's default"
    # v0.5: how often Litestream enforces the window (snapshot.interval) and how long it
    # keeps compacted L0 files (l0-retention), from litestream.yml.
    check_seconds: float | None = None
    l0_retention_seconds: float = V5_L0_RETENTION_SECONDS

    def cutoff(self, now: datetime) -> datetime | None:
        """Objects last modified before this are outside the window (None: no window)."""
        if self.window_seconds is None:
            return None
        return now - timedelta(seconds=self.window_seconds)

    def __str__(self) -> str:
        window = "off" if self.window_seconds is None else format_duration(self.window_seconds)
        return (f"window {window} ({self.source}), keep at least {self.keep_snapshots} snapshot(s) and the "
                f"verified-good restore point, margin {format_duration(self.margin_seconds)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "window": None if self.window_seconds is None else format_duration(self.window_seconds),
            "window_seconds": self.window_seconds,
            "source": self.source,
            "keep_snapshots": self.keep_snapshots,
            "margin_seconds": self.margin_seconds,
        }


def policy_for(replica: ReplicaConfig, db_settings: Any, override_seconds: float | None = None,
               v5: Any = None) -> RetentionPolicy:
    """The policy for one replica: ``override_seconds`` (``--retention``), else the verifier
    settings' ``retention``, else (a v0.5 replica, ``v5`` its ``lib.config.litestream_v5.V5Settings``)
    ``snapshot.retention`` unless ``retention.enabled`` is false, else the replica's
    ``retention`` in litestream.yml (v0.3), else 24h.

    A litestream.yml ``retention`` of 0 or less turns Litestream's retention off; restorable
    then keeps everything too, unless its own settings or ``--retention`` give a window.

    :raises ConfigError: an explicit window or ``keep-snapshots`` below 1.
    """
    keep = int(getattr(db_settings, "keep_snapshots", DEFAULT_KEEP_SNAPSHOTS) or DEFAULT_KEEP_SNAPSHOTS)
    if keep < 1:
        raise ConfigError(f"keep-snapshots={keep} must be at least 1")
    settings_window = getattr(db_settings, "retention_seconds", None)
    for value, source in ((override_seconds, "--retention"), (settings_window, "restorable settings")):
        if value is not None:
            if value <= 0:
                raise ConfigError(f"retention {value}s from {source} must be positive; use e.g. 24h or 7d")
            return RetentionPolicy(float(value), keep, source=source)
    replica_window = getattr(replica, "retention_seconds", None)
    if v5 is not None:
        return _v5_policy(v5, keep, ignored_replica_key=replica_window is not None)
    if replica_window is not None:
        if replica_window <= 0:
            return RetentionPolicy(None, keep, source="retention disabled in litestream.yml")
        return RetentionPolicy(float(replica_window), keep, source="litestream.yml retention")
    return RetentionPolicy(DEFAULT_WINDOW_SECONDS, keep, source="Litestream's default")


def _v5_policy(v5: Any, keep: int, ignored_replica_key: bool) -> RetentionPolicy:
    """Litestream 0.5's window is ``snapshot.retention``; ``retention.enabled: false`` deletes nothing."""
    ignored = "; the replica's retention: is a 0.3 key that 0.5 ignores" if ignored_replica_key else ""
    if not v5.retention_enabled:
        return RetentionPolicy(None, keep, source=(
            f"retention.enabled: false in {v5.origin('retention_enabled')}: Litestream deletes nothing, so only a "
            f"bucket lifecycle rule keeps the bucket bounded (restorable deletes no v0.5 file){ignored}"))
    source = f"snapshot.retention, {v5.origin('snapshot_retention')}{ignored}"
    return RetentionPolicy(v5.snapshot_retention, keep, source=source, check_seconds=v5.snapshot_interval,
                           l0_retention_seconds=v5.l0_retention)

# --------------------------------------------------------------------------- restore points


@dataclass(frozen=True)
class RestorePoint:
    """A position that must stay restorable: v0.3 (generation, index, offset) or v0.5 TXID."""

    format: str
    generation: str | None = None
    index: int = 0
    offset: int = 0
    txid: int | None = None
    label: str = "verified-good"

    def __str__(self) -> str:
        if self.format == FORMAT_V5:
            return f"{self.txid or 0:016x}"
        return f"{self.generation}/{self.index:08x}:{self.offset}"


_V3_POSITION_RE = re.compile(r"^([0-9a-f]{16})/([0-9a-f]{8,}):(\d+)$")

_V5_POSITION_RE = re.compile(r"^[0-9a-f]{1,16}$")


def parse_position(position: str | None, fmt: str | None, label: str = "verified-good") -> RestorePoint | None:
    """A ``DbResult.position`` / history position as a :class:`RestorePoint` (None if unparsable).

    v0.3 positions read ``<generation>/<index hex>:<offset decimal>``, v0.5 ones a hex TXID.
    """
    if not position:
        return None
    if fmt == FORMAT_V3 and (m := _V3_POSITION_RE.match(position)):
        return RestorePoint(FORMAT_V3, m.group(1), int(m.group(2), 16), int(m.group(3)), label=label)
    if fmt == FORMAT_V5 and _V5_POSITION_RE.match(position):
        return RestorePoint(FORMAT_V5, txid=int(position, 16), label=label)
    return None


def as_restore_point(value: Any, label: str = "verified-good") -> RestorePoint | None:
    """Accept a RestorePoint, a ``lib.report.history.GoodRun`` (anything with ``position`` and
    ``format``) or None."""
    if value is None or isinstance(value, RestorePoint):
        return value
    return parse_position(getattr(value, "position", None), getattr(value, "format", None), label)

# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Decision:
    """One object and what the plan does with it, and why."""

    key: str
    size: int
    last_modified: datetime
    action: str  # KEEP | DELETE
    reason: str

    @classmethod
    def of(cls, info: ObjectInfo, action: str, reason: str) -> "Decision":
        return cls(info.key, info.size, info.last_modified, action, reason)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "last_modified": format_iso(self.last_modified), "reason": self.reason}


@dataclass
class RetentionPlan:
    """Every listed object of the chosen format with a decision; ``delete`` is oldest first."""

    format: str | None
    policy: RetentionPolicy
    now: datetime
    keep: list[Decision] = field(default_factory=list)
    delete: list[Decision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def keep_bytes(self) -> int:
        return sum(d.size for d in self.keep)

    @property
    def delete_bytes(self) -> int:
        return sum(d.size for d in self.delete)

    def reason_for(self, key: str) -> str | None:
        return next((d.reason for d in self.keep + self.delete if d.key == key), None)
