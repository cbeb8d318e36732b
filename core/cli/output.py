"""Shared output helpers for CLI commands: `--json` flag and printing.

Data text (ids, titles, names, paths, messages quoting input) reaches the terminal only through
core.common.escape.term (control characters shown as escapes); `text_frame` does it for a table
printed with pandas' to_string. JSON output is safe as is (json.dumps escapes control characters).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from core.common.escape import term
from core.common.jsonio import to_jsonable
from core.store.settings import TEXT_BACKENDS


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_backend_flag(p: argparse.ArgumentParser) -> None:
    """`--backend local|ray` for commands that serve a version (read by core.cli.main into settings)."""
    p.add_argument("--backend", choices=("local", "ray"), default=None,
                   help="serve the version in-process (local) or from one Ray actor per shard (ray; "
                        "cluster from ADLENS_RAY_ADDRESS, default auto). Default: ray if "
                        "ADLENS_RAY_ADDRESS is set, else local")


def add_text_backend(p: argparse.ArgumentParser) -> None:
    """`--text-backend` (resolved by core.store.settings.load_settings)."""
    p.add_argument("--text-backend", dest="text_backend", choices=TEXT_BACKENDS,
                   help="run the text model with PyTorch or a locally exported ONNX model, fp32 or int8 (env "
                        "ADLENS_TEXT_BACKEND; default: the one the workspace records in workspace.json, which "
                        "`adlens demo` sets, else torch; vectors of each backend are cached separately)")


def print_json(obj: Any) -> None:
    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=False))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the error into exit 2 with the flag's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1; got {value}")
    return value


def _safe(value):
    return term(value) if isinstance(value, str) else value


def text_frame(frame: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """A copy of `frame` with every text cell and label made terminal-safe (numbers untouched,
    so to_string's float_format still applies); escaped before to_string sizes the columns."""
    out = frame.map(_safe)
    out.index = out.index.map(_safe)
    if isinstance(out, pd.DataFrame):
        out.columns = out.columns.map(_safe)
    return out
