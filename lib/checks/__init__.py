"""Judging a restored database: integrity, row counts, probes, freshness, drift since the last good run."""
