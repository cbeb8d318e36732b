"""The `adlens` command line. Each command group lives in its own module under core/cli/ and
registers its sub-commands; handlers call `core` functions and print what they return."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Callable

from sqlalchemy import exc as sa_exc

from core.common.errors import AdLensError
from core.common.escape import term
from core.store.db import require_writable
from core.store.readonly import BOTH, DATABASE, WORKSPACE, Needs
from core.store.settings import load_settings

ENV_DEBUG = "ADLENS_DEBUG"

# Each module exposes `register(subparsers)`; imported lazily so `adlens --help` stays fast
# enough and a heavy dependency (torch) is only imported by the commands that need it.
COMMAND_MODULES: tuple[str, ...] = (
    "core.cli.data_cmds",  # status, ingest, demo
    "core.cli.index_cmds",  # embed, build-index, versions, bench
    "core.cli.vectors_cmds",  # import-vectors
    "core.cli.tower_cmds",  # train, evaluate
    "core.cli.funnel_cmds",  # inspect, why-not, audience
    "core.cli.analysis_cmds",  # compare, health, map
    "core.cli.traces_cmds",  # import-traces, logged
)


WRITES: dict[str, Callable[[argparse.Namespace], Needs]] = {
    "status": lambda a: (WORKSPACE,) if a.clean else (),
    "ingest": lambda a: (DATABASE,),
    "demo": lambda a: () if a.if_missing else BOTH,  # --if-missing checks once it knows it must build
    "embed": lambda a: (WORKSPACE,),
    "build-index": lambda a: BOTH,
    "versions": lambda a: BOTH if a.delete else (),
    "bench": lambda a: (WORKSPACE,),
    "import-vectors": lambda a: () if a.vectors_kind == "list" else (WORKSPACE,),
    "train": lambda a: BOTH,
    "map": lambda a: BOTH,
}
"""What each command writes (its workspace folders, its database), checked before it starts so a
read-only workspace or role refuses it with the fix and nothing half-done. A command not listed
only reads; `evaluate` saves its report only where it can (core.cli.tower_cmds)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adlens", description="AdLens: debug an ads retrieval funnel (see README.md)."
    )
    parser.add_argument(
        "--workspace", help="workspace folder (env ADLENS_HOME, default data/workspace)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _os_error_message(exc: OSError) -> str:
    path = exc.filename or "a workspace file"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write {path} ({exc.strerror}): the workspace is read-only; make it writable "
                "(chmod u+w) or copy it somewhere writable and pass --workspace DIR")
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device holding {path}: free some space and run the command again"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{path}: {exc.strerror}; pass --workspace DIR naming a folder"
    return f"{path}: {exc.strerror or exc}"


def _quiet_closed_pipe() -> int:
    # The reader went away (`adlens versions | head -1`): stop writing, say nothing.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 0


class OnceFilter(logging.Filter):
    """Lets each distinct warning through once per command (the demo builds three versions of one
    catalog; the user needs to read "EASE skipped: ..." once, not three times)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every user-facing failure exits 2 with a message (no traceback); a closed
    output pipe exits 0 quietly; ADLENS_DEBUG=1 re-raises for the traceback."""
    logging.basicConfig(level=logging.DEBUG if os.environ.get(ENV_DEBUG) else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OnceFilter) for f in handler.filters):
            handler.addFilter(OnceFilter())
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(os.environ.get(ENV_DEBUG))
    try:
        settings = load_settings(workspace=args.workspace, model=getattr(args, "model", None),
                                 text_backend=getattr(args, "text_backend", None),
                                 backend=getattr(args, "backend", None))
        needs = WRITES.get(args.command, lambda a: ())(args)
        if needs:
            flag = {"status": " --clean", "versions": " --delete"}.get(args.command, "")
            require_writable(settings, args.command + flag, needs)
        code = int(args.func(args, settings) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: classify, print one message, never a traceback
        if debug:
            raise
        from core.store.db import describe_db_error

        if isinstance(exc, AdLensError):
            msg = str(exc)
        elif isinstance(exc, sa_exc.SQLAlchemyError):
            msg = str(describe_db_error(exc, getattr(settings, "db_url", "") if "settings" in locals() else ""))
        elif isinstance(exc, OSError):
            msg = _os_error_message(exc)
        else:
            print(f"internal error: {type(exc).__name__}: {term(exc)}\nThis is a bug in AdLens; run again with "
                  f"{ENV_DEBUG}=1 for the traceback and report it.", file=sys.stderr)
            return 1
        print(f"error: {term(msg, keep_newlines=True)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
