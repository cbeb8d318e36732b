"""The one rule for names that become folder names (versions, towers, imported vectors)."""

from __future__ import annotations

import re

from core.common.errors import AdLensError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_name(name: str, kind: str = "version") -> str:
    """Return `name` if it is a safe folder name; else raise AdLensError naming `kind` and the rule."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise AdLensError(f"invalid {kind} name {name!r}: use 1-64 characters a-z A-Z 0-9 . _ - starting with a "
                          "letter or digit (e.g. v1, ivf-2026-05)")
    return name
