"""Build the static status page from the history in the bucket: ``python -m jobs.report --html DIR``.

Writes ``index.html``, ``status.json``, ``badge.svg`` and ``badges/<db>.svg`` to DIR (a
folder, or a bucket prefix such as ``s3://bucket/status/``). Nothing is verified: the
page shows what the verification runs recorded.
"""
from __future__ import annotations

import os
from typing import Mapping

from lib import cli
from lib.errors import ConfigError

EPILOG = """exit codes:
  0    the page was written (databases whose history is unreadable show as unknown)
  2    the bucket refused the page (storage unreachable, credentials refused)
  3    usage or config error (no --html, history off, an unwritable folder)
  4    unexpected internal error"""


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.report", description=__doc__.strip().splitlines()[0], epilog=EPILOG)
    cli.add_source_args(parser)
    parser.add_argument("--html", metavar="DIR", required=True,
                        help="where to write the site: a folder or s3://bucket/prefix")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ

    def body() -> int:
        import logging

        from lib.report import history
        from lib.report.endpoints import output_secrets
        from lib.report.logs import setup_logging
        from lib.report.scrub import Scrubber
        from lib.site.build import build_site
        from lib.site.publish import publish
        from lib.verify import targets

        args = parse_args(argv)
        config = cli.load_config(args, environ)
        setup_logging(environ, secrets=config.secrets())
        settings = history.HistorySettings.from_environ(environ)
        if not settings.enabled:
            raise ConfigError("RESTORABLE_HISTORY=off: the status page is built from the history; unset it")
        scrubber = Scrubber.from_environ(environ, [*config.secrets(), *output_secrets(environ)])
        files = build_site(targets(config, args.replica), settings, scrubber)
        where = publish(args.html, files, environ)
        logging.getLogger("jobs.report").info("status page written to %s files=%d", where, len(files))
        return 0

    cli.install_signal_handlers()
    return cli.guarded(body)


if __name__ == "__main__":
    cli.exit_now(main())
