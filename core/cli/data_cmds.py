"""`adlens ingest`, `adlens demo`, `adlens status`: getting data into the workspace."""

from __future__ import annotations

import argparse

from core.catalog import table_counts
from core.cli.output import add_json_flag, print_json
from core.db import make_engine, redact_url
from core.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the workspace, database and table counts")
    add_json_flag(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings.db_url)
    report = {
        "workspace": str(settings.workspace),
        "database": redact_url(settings.db_url),
        "tables": table_counts(engine),
    }
    if args.json:
        print_json(report)
    else:
        print(f"workspace: {report['workspace']}\ndatabase:  {report['database']}")
        for name, n in report["tables"].items():
            print(f"  {name:<12} {n:>10,}")
    return 0
