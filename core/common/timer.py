"""`StageTimer`: wall-clock milliseconds per stage of a pipeline, measured lap by lap; `StepLog`:
seconds per step appended to a file (the dashboard's timing log)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """`lap(stage)` records the milliseconds since the previous lap (or the start) under `stage`;
    `done()` adds "total" and returns every stage's time, in the order they ran."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._last) * 1e3
        self._last = now

    def done(self) -> dict[str, float]:
        self.ms["total"] = (time.perf_counter() - self._start) * 1e3
        return self.ms


class StepLog:
    """Appends one JSON line per timed step (``{"step": …, "s": seconds, "t": Unix time at its end}``)
    to `path`; does nothing
    when `path` is None. The dashboard's record of what it loaded or built on a page's critical
    path, read back by `adlens bench` (core/bench/dashboard_first_view.py). Thread-safe: one
    `write` per line, appended."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - t)

    def record(self, name: str, seconds: float) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": name, "s": round(seconds, 4), "t": round(time.time(), 3)}) + "\n")
        except OSError:  # a diagnostic: never fail a page over it
            pass
