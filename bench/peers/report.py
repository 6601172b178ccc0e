"""The Peers section of BENCHMARKS.md: one row per server and request body, the targets against the best peer."""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers.harness import PeerResults, Start
from bench.report import BUSY_LOAD, KEPT_SECTION, PEERS_SECTION, Target, _num, _ratio, _table, _verdict, combine
from bench.server import LoadResult

MiB = 2**20
OURS = "ours"  # the contender whose figures the targets judge: the server in its default configuration
LIKE_FOR_LIKE = "ours-onnx"


@dataclass(frozen=True)
class Row:
    contender: str
    route: str
    title: str  # server and version
    request: str
    one: LoadResult  # 1 client, every round
    many: LoadResult  # the most clients, every round
    ready_s: float  # medians over the contender's starts
    first_answer_s: float
    pss_bytes: float
    rss_bytes: float
    is_ours: bool
    many_by_round: tuple[float, ...]  # images/s at the most clients, round by round


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rows(results: PeerResults) -> list[Row]:
    found = []
    for key, info in results.contenders.items():
        starts: list[Start] = [s for s in results.starts if s.contender == key]
        for route, request in info.routes.items():
            runs = [r for r in results.load if r.config == key and r.route == route]
            if not runs:
                continue
            most = max(r.clients for r in runs)
            one = [r for r in runs if r.clients == 1]
            many = [r for r in runs if r.clients == most]
            if not one or not many:
                continue
            found.append(
                Row(
                    key,
                    route,
                    info.name if info.is_ours else f"{info.name} {info.version}".strip(),
                    request,
                    combine(one),
                    combine(many),
                    _median([s.ready_s for s in starts]),
                    _median([s.first_answer_s for s in starts]),
                    _median([float(s.pss_bytes) for s in starts]),
                    _median([float(s.rss_bytes) for s in starts]),
                    info.is_ours,
                    tuple(r.per_second for r in many),
                )
            )
    return found


def targets(results: PeerResults) -> list[Target]:
    """The issue's targets for our default configuration against the best peer (each figure's best, whichever
    peer has it); the same ratios for ``RUNTIME=onnx`` as information (like for like, not judged)."""
    table = rows(results)
    peers = [r for r in table if not r.is_ours]
    found: list[Target] = []
    if not peers:
        return found
    fastest = max(peers, key=lambda r: r.many.per_second)
    steadiest = min(peers, key=lambda r: r.many.p99_ms)
    quickest = min(peers, key=lambda r: r.one.p50_ms)
    lightest = min(peers, key=lambda r: r.pss_bytes)
    for key in (OURS, LIKE_FOR_LIKE):
        mine = next((r for r in table if r.contender == key), None)
        if mine is None:
            continue
        judged = key == OURS
        prefix = "" if judged else "like for like, `RUNTIME=onnx`: "
        clients = mine.many.clients

        def target(
            name: str, measured: str, required: str, met: bool, judged: bool = judged, prefix: str = prefix
        ) -> Target:
            return Target(prefix + name, measured, required if judged else f"({required})", met if judged else None)

        ratio = _ratio(mine.many.per_second, fastest.many.per_second)
        found.append(
            target(
                f"images/s at {clients} clients vs the best peer's ({fastest.title}, {fastest.route})",
                f"{mine.many.per_second:.1f} / {fastest.many.per_second:.1f} = {ratio:.2f}x",
                ">= 1.5x",
                ratio >= 1.5,
            )
        )
        ratio = _ratio(mine.many.p99_ms, steadiest.many.p99_ms)
        found.append(
            target(
                f"p99 at {clients} clients vs the best peer's ({steadiest.title}, {steadiest.route})",
                f"{mine.many.p99_ms:.1f} / {steadiest.many.p99_ms:.1f} ms = {ratio:.2f}x",
                "<= 0.8x",
                ratio <= 0.8,
            )
        )
        ratio = _ratio(mine.one.p50_ms, quickest.one.p50_ms)
        found.append(
            target(
                f"p50 at 1 client vs the best peer's ({quickest.title}, {quickest.route})",
                f"{mine.one.p50_ms:.2f} / {quickest.one.p50_ms:.2f} ms = {ratio:.2f}x",
                "<= 0.8x",
                ratio <= 0.8,
            )
        )
        ratio = _ratio(mine.pss_bytes, lightest.pss_bytes)
        found.append(
            target(
                f"memory after the runs (PSS of the process tree) vs the lightest peer's ({lightest.title})",
                f"{mine.pss_bytes / MiB:.0f} / {lightest.pss_bytes / MiB:.0f} MiB = {ratio:.2f}x",
                "<= 0.6x",
                ratio <= 0.6,
            )
        )
        found.append(
            target(
                "cold start: process start to its ready endpoint answering 200 (median of the rounds)",
                f"{mine.ready_s:.2f} s",
                "<= 1 s",
                mine.ready_s <= 1.0,
            )
        )
    return found


def _busy(results: PeerResults) -> list[str]:
    start = results.machine.get("load average at start (1, 5, 15 min)", "")
    try:
        load = float(start.split()[0])
    except (IndexError, ValueError):
        return []
    if load <= BUSY_LOAD:
        return []
    return [
        f"**The machine was busy** (load average {load:.2f} at the start): every figure is lower and every "
        "percentile wider than a quiet machine gives; the ratios, from interleaved rounds, are the telling part.",
        "",
    ]


def section(results: PeerResults) -> str:
    """The ``## Peers`` section, ending with a newline."""
    opts = results.options
    machine = results.machine
    parts = [
        PEERS_SECTION,
        "",
        f"Measured {results.started} in {results.seconds / 60:.1f} minutes by `{results.command}` on the machine "
        f"above ({machine.get('CPU', '')}, {machine.get('CPUs', '')}); load average (1, 5, 15 min) "
        f"{machine.get('load average at start (1, 5, 15 min)', '')} at the start, {results.load_average_after} "
        "at the end. See docs/benchmark.md, *Peers*.",
        "",
        *_busy(results),
        "Every server gets the same 640x480 JPEG (scikit-image's cat) and runs the same model file (this project's "
        "ONNX export of EfficientNet-Lite0) after the same Pillow decode and this project's own preprocessing "
        "(`backend/classifier/_preprocess.py`, loaded from its file by every peer). Every peer runs it on ONNX "
        "Runtime, one single-threaded session per worker, two workers; ours runs in its default configuration "
        "and with `RUNTIME=onnx`, like for like. Each must answer the photo's top class as this project's "
        f"classifier does ({results.expected}) before it is measured. {opts['rounds']} round(s): in each, every "
        "server in turn is "
        f"started (cold start), loaded by wrk (one thread, `bench/post_body.lua`) with 1 then 16 connections, each "
        f"run {opts['duration']} s after a {opts['warmup']} s warm-up, then its memory is read and it is stopped. "
        "images/s are over every round; latencies, cold starts and memory are the medians of the rounds'.",
        "",
        "### Targets",
        "",
        _table(
            ["target", "measured", "required", "verdict"],
            [[t.name, t.measured, t.required, _verdict(t.met)] for t in targets(results)],
        ),
        "",
        "### Side by side",
        "",
    ]
    table = rows(results)
    body = [
        [
            f"**{r.title}**" if r.is_ours else r.title,
            r.request,
            _num(r.one.per_second),
            _num(r.one.p50_ms, 2),
            f"**{r.many.per_second:,.1f}**",
            " / ".join(f"{x:.0f}" for x in r.many_by_round),
            _num(r.many.p99_ms, 1),
            f"{r.many.server_cores:.2f}",
            _num(r.many.per_cpu_second),
            f"{r.ready_s:.2f} / {r.first_answer_s:.2f}",
            f"{r.pss_bytes / MiB:,.0f} / {r.rss_bytes / MiB:,.0f}",
            str(r.one.errors + r.many.errors),
        ]
        for r in table
    ]
    parts += [
        _table(
            [
                "server",
                "request",
                "1 client images/s",
                "1 client p50 ms",
                "16 clients images/s",
                "round by round",
                "16 clients p99 ms",
                "server CPUs (16 clients)",
                "images per CPU-second (16 clients)",
                "cold start s: ready / first answer",
                "memory MiB: PSS / RSS summed",
                "errors",
            ],
            body,
        )
        if body
        else "No server was measured.",
        "",
        "### Configurations",
        "",
    ]
    parts += [
        f"- **{info.name}{' ' + info.version if info.version else ''}** (`{key}`): {info.configuration}."
        for key, info in results.contenders.items()
    ]
    parts.append("")
    retried = [s for s in results.starts if s.failed_starts]
    if retried:
        parts += ["### Started again", ""]
        parts += [
            f"- `{s.contender}`, round {s.round}: {len(s.failed_starts)} start(s) failed first: "
            f"{_one_line(s.failed_starts[-1], 300)}"
            for s in retried
        ]
        parts.append("")
    if results.skipped:
        parts += ["### Skipped", ""]
        parts += [f"- `{key}`: {_one_line(reason)}" for key, reason in results.skipped.items()]
        parts.append("")
    parts += [
        "*Cold start* is from starting the server's process to its ready endpoint answering 200 (ours: `/ready`; "
        "LitServe `/health`, BentoML `/readyz`, TorchServe `/ping`, PyTriton `/v2/models/classifier/ready`), "
        "then to its first classification answered (TorchServe's `/ping` answers before its workers can). "
        "*Memory* is read after the round's load: PSS adds up the process tree's pages with shared ones counted "
        "once (the fair sum for servers of several processes), RSS summed counts them in every process.",
        "",
    ]
    return "\n".join(parts)


def _one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def write_section(output: Path, text: str) -> None:
    """Put ``text`` (the Peers section) into the report at ``output``, in place of the previous one, else
    before the hand-written section, else at the end; every other section stays as it is."""
    previous = output.read_text(encoding="utf-8") if output.is_file() else "# Benchmarks\n"
    start = previous.find(f"\n{PEERS_SECTION}\n")
    if start >= 0:
        end = previous.find("\n## ", start + 1)
        head, tail = previous[:start], (previous[end:] if end >= 0 else "")
    else:
        kept = previous.find(f"\n{KEPT_SECTION}\n")
        head, tail = (previous[:kept], previous[kept:]) if kept >= 0 else (previous, "")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(head.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + tail, encoding="utf-8")


def as_json(results: PeerResults) -> dict[str, Any]:
    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            data = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, LoadResult):
                data["per_second"] = value.per_second
            return data
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    payload: dict[str, Any] = encode(results)
    payload["rows"] = [encode(r) for r in rows(results)]
    payload["targets"] = [encode(t) for t in targets(results)]
    return payload


def console_summary(results: PeerResults) -> str:
    lines = [
        "",
        f"{'server':<34}{'request':<18}{'1c img/s':>10}{'1c p50':>9}{'16c img/s':>11}{'16c p99':>9}"
        f"{'ready s':>9}{'PSS MiB':>9}",
    ]
    for r in rows(results):
        lines.append(
            f"{r.title[:33]:<34}{r.route[:17]:<18}{r.one.per_second:>10.1f}{r.one.p50_ms:>9.2f}"
            f"{r.many.per_second:>11.1f}{r.many.p99_ms:>9.1f}{r.ready_s:>9.2f}{r.pss_bytes / MiB:>9.0f}"
        )
    lines.append("")
    for t in targets(results):
        lines.append(f"{t.name[:100]:<102}{t.measured[:34]:<36}{t.required:<12}{_verdict(t.met)}")
    for key, reason in results.skipped.items():
        lines.append(f"skipped {key}: {_one_line(reason, 200)}")
    return "\n".join(lines)
