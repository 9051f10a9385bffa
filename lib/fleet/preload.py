"""What an RQ worker loads once, before its work loop, so that every job's work horse inherits it.

RQ runs each job in a work horse forked from the worker (``os.fork``): whatever the worker
imported and built before it forks, the job finds ready, and whatever the job loads itself
is thrown away with the horse. A job verifying a small database would otherwise spend most
of its CPU on the same imports (boto3/botocore, sqlite-utils and numpy, lz4, the
restorers and checks, all deferred elsewhere for a quick ``--help``) and on botocore's
parsing of the S3 model and endpoint rules.

Only fork-safe things are built here: modules, and botocore's session with its loaded
models. No client is kept and no request is made, so no socket or connection pool exists
in the worker to be shared by two processes after a fork; each horse opens its own.
"""
from __future__ import annotations

import importlib
import logging
import resource

log = logging.getLogger(__name__)

# The modules a verifying job imports that nothing in the worker's start-up imported yet
# (the deferred imports of lib.verify, lib.storage.factory and the checks); tests/test_rq_preload.py
# fails when a job needs one more of them.
MODULES = (
    "lib.fleet.rqjob",
    "lib.storage.s3",
    "lib.storage.local",
    "lib.litestream.v3.restore",
    "lib.litestream.v3.race",
    "lib.litestream.v5.restore",
    "lib.checks.suite",
    "lib.checks.integrity",
    "lib.checks.counts",
    "lib.vault.store",
    "lib.vault.manifest",
    "sqlite_utils",
    "numpy",
    "lz4.frame",
)


def preload() -> float:
    """Import ``MODULES`` and warm botocore's S3 models; return the CPU seconds it took.

    A module that cannot be imported is logged and skipped: the job that needs it will
    report the same error as its own finding, which is where it belongs.
    """
    started = _cpu()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the job reports it; the worker must still start
            log.warning("preload: could not import %s: %s: %s", name, type(exc).__name__, exc)
    try:
        from lib.storage import s3  # imported above with MODULES; here so a failed import is only logged

        s3.warm_up()
    except Exception as exc:
        log.warning("preload: botocore not warmed: %s: %s", type(exc).__name__, exc)
    spent = _cpu() - started
    log.info("preloaded %d module(s) and botocore's S3 models in %.2f s of CPU", len(MODULES), spent)
    return spent


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
