"""``lib.cli.tune_process``: the malloc arena cap a job sets unless the operator set one.

Measured on a real process: eight threads each allocate (past Python's small-object
allocator, below glibc's mmap threshold), then glibc's own ``malloc_info`` counts the arenas.
glibc gives each new thread an arena of its own up to its limit, so the count is the limit.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, restorable_env

PROBE = r"""
import ctypes, os, tempfile, threading
from lib import cli
cli.tune_process()
barrier = threading.Barrier(8)
kept = []
def work():
    barrier.wait()
    kept.append([bytearray(4096) for _ in range(64)])
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fd, path = tempfile.mkstemp()
os.close(fd)
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def arenas(malloc_arena_max: str | None) -> int:
    env = restorable_env()
    env.pop("MALLOC_ARENA_MAX", None)
    if malloc_arena_max is not None:
        env["MALLOC_ARENA_MAX"] = malloc_arena_max
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.parametrize("setting", [None, "", " "])
def test_jobs_cap_malloc_arenas_at_two_unless_the_operator_sets_a_limit(setting):
    assert arenas(setting) == 2


def test_an_operator_limit_wins():
    assert arenas("4") == 4
