"""Shared output helpers for CLI commands: `--json` flag and printing."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.common.jsonio import to_jsonable


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")



def print_json(obj: Any) -> None:
    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=False))
