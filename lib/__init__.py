"""restorable: prove that Litestream backups of SQLite databases restore."""
import os

# numpy (WAL checksums) brings OpenBLAS, which starts a thread per core at import: ~50 ms
# of CPU per run for linear algebra restorable never does. An operator's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
