"""The `adlens` command line. Each command group lives in its own module under core/cli/ and
registers its sub-commands; handlers call `core` functions and print what they return."""

from __future__ import annotations

import argparse
import importlib
import sys

from core.common.errors import AdLensError
from core.store.settings import load_settings

# Each module exposes `register(subparsers)`; imported lazily so `adlens --help` stays fast
# enough and a heavy dependency (torch) is only imported by the commands that need it.
COMMAND_MODULES: tuple[str, ...] = (
    "core.cli.data_cmds",  # status, ingest, demo
    "core.cli.index_cmds",  # embed, build-index, versions, bench
    "core.cli.tower_cmds",  # train, evaluate
    "core.cli.funnel_cmds",  # inspect, why-not, audience
    "core.cli.analysis_cmds",  # compare, health, map
)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = load_settings(workspace=args.workspace, model=getattr(args, "model", None))
    try:
        return int(args.func(args, settings) or 0)
    except AdLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
