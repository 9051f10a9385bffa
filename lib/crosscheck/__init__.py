"""Cross-check against ``litestream restore``: the same frozen objects restored by both, compared."""
