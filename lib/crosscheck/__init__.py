"""Cross-check against ``litestream restore``: freeze the restore plan's objects, restore them
with both restorable and the real binary, compare (``docs/detection.md``, "Cross-check")."""
