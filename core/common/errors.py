"""Errors AdLens raises for bad input. The CLI prints their message (no traceback) and exits 2."""

from __future__ import annotations


class AdLensError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ValidationError(AdLensError):
    """Input data failed validation; nothing was written."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{len(self.problems)} problem(s) found; nothing was written:\n{shown}{more}")


class NotFoundError(AdLensError):
    """An id, version, tower or file that does not exist."""


class ArtifactError(AdLensError):
    """An artifact on disk is missing, corrupted or does not match its manifest."""


class StoreError(AdLensError):
    """The database or the workspace folder cannot be used (unreachable, unwritable, misnamed)."""


class ReadOnlyError(StoreError):
    """A writing command on a read-only workspace or database (a read-only mount, a SELECT-only
    role); nothing was written."""
