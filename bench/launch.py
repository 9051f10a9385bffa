"""Run one command and write its own wall time, CPU and peak RSS to a file (bench/harness.measure).

On Linux a process's peak RSS (``ru_maxrss``) includes the memory of the process it was forked
from, as it was before the ``exec``: the kernel carries the old address space's high-water mark
over. Forked from the benchmark process (which hosts the delay proxy and its request log,
~140 MB by the end of a run), every measured command would read at least that much, whatever
it used itself. This launcher is small (``python -S``, nothing imported before the fork), so
the floor under every measured command is its ~8 MB, for every tool alike.

    python -S -E bench/launch.py RESULT_FILE CMD [ARG...]

RESULT_FILE gets one line: ``seconds cpu_seconds maxrss_kib exit_code``; the clock runs from
just before the fork to the child's exit, so this launcher's own start-up is not counted.
"""
import os
import sys
import time


def main() -> int:
    result_path, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    with open(result_path, "w") as out:
        out.write(f"{seconds} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} "
                  f"{os.waitstatus_to_exitcode(status)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
