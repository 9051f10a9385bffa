"""The issue-8 benchmark: restorable against litestream restore (run bench/run.py)."""
