"""Litestream v0.5: LTX files in levels; plan and restore."""
