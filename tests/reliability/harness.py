"""What the reliability, hostile-input and security tests share: the real server's process and its memory."""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from tests.helpers import backend_server

MB = 1024 * 1024


def server_process(base_url: str) -> psutil.Process:
    """The process (a child of this test process) listening on ``base_url``'s port."""
    port = urlsplit(base_url).port
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                return child
    raise LookupError(f"no child process listens on port {port}")


@dataclass
class Server:
    url: str
    process: psutil.Process
    log: Path

    def rss_mb(self) -> float:
        """The memory of the server and its decoder processes (see ``memory_mb``)."""
        return memory_mb(self.process)

    def log_records(self) -> list[dict[str, object]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(env: Mapping[str, str], log: Path) -> Iterator[Server]:
    """``python -m backend`` (the real entry point, uvicorn) with ``env``; stopped on exit."""
    with backend_server(env, log) as url:
        yield Server(url, server_process(url), log)


def memory_mb(process: psutil.Process) -> float:
    """Memory of ``process`` and every process it started (the decoders), in MB: their proportional set
    sizes, so pages they share (a decoder shares most of its own with the process it was forked from) are
    counted once."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total / MB


class PeakRss:
    """Samples ``memory_mb`` of a process tree every few milliseconds in a thread; ``peak_mb`` is the largest."""

    def __init__(self, process: psutil.Process, interval_s: float = 0.005) -> None:
        self.process = process
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, memory_mb(self.process))
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.peak_mb = memory_mb(self.process)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, memory_mb(self.process))


def percentiles(values: list[float]) -> str:
    """``n, p50, p95, max`` of latencies in seconds, as milliseconds, for printing."""
    if not values:
        return "n=0"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"n={len(ordered)} p50={statistics.median(ordered) * 1000:.0f}ms "
        f"p95={p95 * 1000:.0f}ms max={ordered[-1] * 1000:.0f}ms"
    )
