"""`StageTimer`: wall-clock milliseconds per stage of a pipeline, measured lap by lap."""

from __future__ import annotations

import time


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
