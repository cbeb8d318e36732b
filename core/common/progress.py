"""The one progress-callback convention: `progress(fraction, step)`.

`fraction` is the share of the whole job done, in [0, 1], non-decreasing; `step` says what is
happening now, in words a user understands ("Exact search (the oracle)"). Library functions take
`progress: Progress | None` and never print; the CLI passes `cli_progress()` (a tqdm bar on
stderr), the dashboard passes a function updating `st.progress`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[float, str], None]


def report(progress: Progress | None, fraction: float, step: str) -> None:
    """Call `progress` if given, with the fraction clamped to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), step)


def scaled(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A callback for a sub-job that covers [start, end] of the whole."""
    if progress is None:
        return None
    return lambda f, step: report(progress, start + (end - start) * f, step)


def cli_progress(enabled: bool = True, *, file=None) -> Progress | None:
    """A tqdm bar (percent of the whole, current step as its description) for terminal use."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=100, file=file or sys.stderr, bar_format="{percentage:3.0f}% |{bar:24}| {desc}", leave=False)

    def update(fraction: float, step: str) -> None:
        bar.set_description_str(step, refresh=False)
        bar.update(max(0, round(fraction * 100) - bar.n))
        if fraction >= 1.0:
            bar.close()

    return update
