"""Litestream v0.3: generations, snapshots and WAL segments; plan, replay and restore."""
