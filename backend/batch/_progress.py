"""Progress of a task: a bar on a terminal, a JSON log line every so often elsewhere (Cloud Logging).

Hand-written: tqdm is not a dependency of the image, and a bar is one line of text redrawn in place.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TextIO

logger = logging.getLogger("backend.batch")

_BAR_WIDTH = 28
_REDRAW_S = 0.25


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts results; ``tick`` (called often) redraws the bar or, every ``interval_s``, logs a line."""

    def __init__(self, total: int, *, interval_s: float, terminal: TextIO | None) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.interval_s = interval_s
        self.terminal = terminal  # None: not a terminal, log lines instead
        self.started = time.perf_counter()
        self._last = self.started

    def add(self, *, failed: bool) -> None:
        self.done += 1
        self.errors += failed

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def per_second(self) -> float:
        seconds = self.seconds
        return self.done / seconds if seconds > 0 else 0.0

    def fields(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "errors": self.errors,
            "images_per_second": round(self.per_second, 1),
            "seconds": round(self.seconds, 1),
        }

    def tick(self, *, final: bool = False) -> None:
        now = time.perf_counter()
        if self.terminal is not None:
            if final or now - self._last >= _REDRAW_S:
                self._last = now
                self.terminal.write("\r" + self.line() + ("\n" if final else ""))
                self.terminal.flush()
        elif not final and now - self._last >= self.interval_s:
            self._last = now
            logger.info("progress", extra=self.fields())

    def line(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * _BAR_WIDTH)
        rate = self.per_second
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.done:,}/{self.total:,} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:6.1%} "
            f"{rate:6.1f} images/s  {self.errors:,} errors  {_clock(self.seconds)} elapsed, {_clock(left)} left "
        )
