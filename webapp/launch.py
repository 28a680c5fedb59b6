"""The `humanlm` command's entry point, which decides before anything else is imported whether
this process is the gevent server.

Why here: gevent must patch the standard library (socket, ssl, threading, time) before any
module imports it, or locks and sockets made earlier block the whole process instead of one
greenlet. Only `humanlm serve` with HUMANLM_SERVER_WORKER=gevent (the default) is patched;
every other command, the `--debug` server, the job process and the tests run unpatched.
"""

from __future__ import annotations

import os
import sys

GREEN_WORKERS = ("gevent",)
WORKERS = ("gevent", "gthread")
_GROUP_OPTIONS_WITH_VALUE = {"--app", "-A", "--env-file", "-e"}  # Flask's group options


def serves_green(argv: list[str], environ: os._Environ | dict) -> bool:
    """True for `serve` (not `--debug`) when the configured worker class is gevent."""
    words = iter(argv)
    command = None
    for arg in words:
        if arg in _GROUP_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not arg.startswith("-"):
            command = arg
            break
    if command != "serve" or "--debug" in argv or "--help" in argv:
        return False
    # The settings table imports no socket, ssl or threading: reading it first is safe.
    from .config import SETTINGS

    worker = next(s for s in SETTINGS if s.key == "SERVER_WORKER")
    return environ.get(worker.env, worker.default).strip().lower() in GREEN_WORKERS


def humanlm_command(*args: str) -> list[str]:
    """The `humanlm` command line for a child process on this interpreter (the console script
    need not be on PATH): `humanlm_command("worker")`."""
    return [sys.executable, "-c", "from webapp.launch import main; main()", *args]


def main() -> None:
    if serves_green(sys.argv[1:], os.environ):
        from gevent import monkey

        monkey.patch_all()
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
