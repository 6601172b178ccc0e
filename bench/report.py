"""Turning one benchmark run into BENCHMARKS.md, a throughput plot and a verdict on each target."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from backend.config import Settings
from bench.batch import TARGET as BATCH_TARGET
from bench.batch import BatchRun
from bench.inprocess import RuntimeCeiling
from bench.server import CONFIGS, PREDICTION_LOG, LoadResult, MemorySample, ServerConfig

SECTIONS = (
    "## Targets",
    "## Machine",
    "## In-process ceiling",
    "## Server over HTTP",
    "## Standard protocols",
    "## Prediction log",
    "## Latency of a 12-megapixel photo",
    "## Cold start",
    "## Memory",
    "## How to read this",
)
# Written by hand in BENCHMARKS.md: a run keeps it (from its heading to the end) when it rewrites the report.
KEPT_SECTION = "## Measurements behind the code"
# Written by `python -m bench --peers` (bench/peers/report.py): a run of the rest keeps it as it was.
PEERS_SECTION = "## Peers"
LIBRARIES = ("onnxruntime", "openvino", "torch", "numpy", "pillow", "fastapi", "uvicorn", "starlette", "pydantic")


@dataclass
class Results:
    command: str
    started: str
    options: dict[str, Any]
    machine: dict[str, str]
    configs: tuple[ServerConfig, ...] = CONFIGS
    ceilings: dict[str, RuntimeCeiling] = field(default_factory=dict)
    load: list[LoadResult] = field(default_factory=list)
    cold_starts: dict[str, list[float]] = field(default_factory=dict)
    memory: list[MemorySample] = field(default_factory=list)
    memory_checkpoints: tuple[int, int] = (1000, 2000)
    protocols: list[LoadResult] = field(default_factory=list)  # /predict and the protocols, round by round
    routes: dict[str, str] = field(default_factory=dict)  # each route's key: its request, in a few words
    batch: BatchRun | None = None  # python -m backend.batch, one task (bench/batch.py)
    prediction_log: list[LoadResult] = field(default_factory=list)  # fast and log servers, round by round
    prediction_log_records: int = 0  # what the log server wrote (Parquet rows)
    seconds: float = 0.0
    load_average_after: str = ""

    def find(self, config: str, image: str, clients: int) -> LoadResult | None:
        for result in self.load:
            if (result.config, result.image, result.clients) == (config, image, clients):
                return result
        return None

    def prediction_log_totals(self) -> dict[str, LoadResult]:
        """The prediction-log comparison's rounds, one per server (``fast`` first), as ``route_totals``."""
        keys = sorted({r.config for r in self.prediction_log}, key=lambda key: (key != "fast", key))
        return {key: combine([r for r in self.prediction_log if r.config == key]) for key in keys}

    def rss_at(self, requests: int) -> int | None:
        return next((s.rss_bytes for s in self.memory if s.requests == requests), None)

    def route_totals(self) -> dict[str, LoadResult]:
        """Each route's rounds as one: requests, seconds, errors and CPU time added up (so images/s is over
        all its rounds), latency percentiles the median of the rounds'. ``/predict`` first."""
        keys = sorted({r.route for r in self.protocols}, key=lambda key: (key != "predict", key))
        return {key: combine([r for r in self.protocols if r.route == key]) for key in keys}


def combine(rounds: list[LoadResult]) -> LoadResult:
    first = rounds[0]
    return dataclasses.replace(
        first,
        requests=sum(r.requests for r in rounds),
        seconds=sum(r.seconds for r in rounds),
        errors=sum(r.errors for r in rounds),
        mean_ms=statistics.median(r.mean_ms for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p95_ms=statistics.median(r.p95_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        max_ms=max(r.max_ms for r in rounds),
        server_cpu_s=sum(r.server_cpu_s for r in rounds),
        wrk_cpu_s=sum(r.wrk_cpu_s for r in rounds),
    )


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    required: str
    met: bool | None  # None: not measured in this run


def machine_facts(wrk: str | None) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as f:  # Linux: the CPU's marketing name
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts = {
        "CPU": cpu,
        "CPUs": f"{os.cpu_count()} online, {usable} usable by this process{_cgroup_quota()}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
    }
    for name in LIBRARIES:
        try:
            facts[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            facts[name] = "not installed"
    if wrk:  # not needed by --in-process-only
        version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        facts["wrk"] = (
            (version.stdout or version.stderr).splitlines()[0].strip() if (version.stdout or version.stderr) else wrk
        )
    facts["load average at start (1, 5, 15 min)"] = load_average()
    return facts


def _cgroup_quota() -> str:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return ""
    return "" if quota == "max" else f", cgroup quota {int(quota) / int(period):g} CPUs"


DEFAULT_RUNTIME = Settings.model_fields["runtime"].default


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def targets(results: Results) -> list[Target]:
    found: list[Target] = []
    clients = max((r.clients for r in results.load if r.image == "640x480"), default=0)
    fast_top = results.find("fast", "640x480", clients)
    naive_top = results.find("naive", "640x480", clients)
    default = results.ceilings.get(DEFAULT_RUNTIME)  # the "fast" configuration's runtime
    if fast_top and default:
        ceiling = default.ceiling.rate.per_second
        ratio = _ratio(fast_top.per_second, ceiling)
        found.append(
            Target(
                f"server at {clients} clients vs the in-process pipeline ceiling ({DEFAULT_RUNTIME})",
                f"{fast_top.per_second:.1f} / {ceiling:.1f} images/s = {ratio:.2f}x",
                ">= 0.9x",
                ratio >= 0.9,
            )
        )
    if fast_top and naive_top:
        ratio = _ratio(fast_top.per_second, naive_top.per_second)
        found.append(
            Target(
                f"server at {clients} clients vs the naive configuration",
                f"{fast_top.per_second:.1f} / {naive_top.per_second:.1f} images/s = {ratio:.2f}x",
                ">= 3x",
                ratio >= 3,
            )
        )
    fast_one = results.find("fast", "640x480", 1)
    if fast_one and default:
        ratio = _ratio(fast_one.p50_ms, default.single_image_ms)
        found.append(
            Target(
                "p50 at 1 client vs the in-process single-image pipeline (batching adds no idle delay)",
                f"{fast_one.p50_ms:.2f} / {default.single_image_ms:.2f} ms = {ratio:.2f}x",
                "<= 1.2x",
                ratio <= 1.2,
            )
        )
    phone = results.find("fast", "4032x3024", 1)
    if phone and fast_one:
        ratio = _ratio(phone.p50_ms, fast_one.p50_ms)
        found.append(
            Target(
                "p50 of a 12-megapixel photo vs a 640x480 one, 1 client",
                f"{phone.p50_ms:.2f} / {fast_one.p50_ms:.2f} ms = {ratio:.2f}x",
                "<= 2x",
                ratio <= 2,
            )
        )
    cold = results.cold_starts.get("fast")
    if cold:
        mean = statistics.mean(cold)
        found.append(Target("cold start to /ready (model export cached)", f"{mean:.2f} s", "<= 1 s", mean <= 1.0))
    first, second = results.memory_checkpoints
    rss1, rss2 = results.rss_at(first), results.rss_at(second)
    if rss1 and rss2:
        growth = _ratio(rss2 - rss1, rss1)
        found.append(
            Target(
                f"memory (server and decoders) after {second:,} requests vs after {first:,}",
                f"{rss2 / 2**20:.1f} vs {rss1 / 2**20:.1f} MiB ({growth:+.1%})",
                "within 5%",
                abs(growth) <= 0.05,
            )
        )
    found += _protocol_targets(results)
    batch_ceiling = results.ceilings.get(results.batch.runtime) if results.batch else None
    if results.batch and batch_ceiling:
        ceiling = batch_ceiling.ceiling.rate.per_second
        ratio = _ratio(results.batch.per_second, ceiling)
        found.append(
            Target(
                f"batch job, one task (python -m backend.batch) vs the in-process pipeline ceiling "
                f"({results.batch.runtime})",
                f"{results.batch.per_second:.1f} / {ceiling:.1f} images/s = {ratio:.2f}x",
                f">= {BATCH_TARGET}x",
                ratio >= BATCH_TARGET,
            )
        )
    logged = results.prediction_log_totals()
    if "fast" in logged and PREDICTION_LOG in logged:
        off, on = logged["fast"].per_second, logged[PREDICTION_LOG].per_second
        ratio = _ratio(on, off)
        found.append(
            Target(
                f"server with the prediction log on vs off, {logged['fast'].clients} clients (interleaved rounds)",
                f"{on:.1f} / {off:.1f} images/s = {ratio:.3f}x",
                ">= 0.97x",
                ratio >= 0.97,
            )
        )
    return found


PROTOCOL_TARGET = 0.95  # each protocol's images/s within 5% of /predict's (or above it)


def _protocol_targets(results: Results) -> list[Target]:
    totals = results.route_totals()
    predict = totals.pop("predict", None)
    if predict is None:
        return []
    found = []
    for key, route in totals.items():
        ratio = _ratio(route.per_second, predict.per_second)
        found.append(
            Target(
                f"`{key}` route at {route.clients} clients vs `/predict` (same server, interleaved runs)",
                f"{route.per_second:.1f} / {predict.per_second:.1f} images/s = {ratio:.2f}x",
                f"within 5% (>= {PROTOCOL_TARGET}x)",
                ratio >= PROTOCOL_TARGET,
            )
        )
    return found


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


BUSY_LOAD = 0.5  # a 1-minute load average above this at the start: other processes were using the CPUs


def _busy_warning(results: Results) -> list[str]:
    start = results.machine.get("load average at start (1, 5, 15 min)", "")
    try:
        load = float(start.split()[0])
    except (IndexError, ValueError):
        return []
    if load <= BUSY_LOAD:
        return []
    return [
        f"**The machine was busy**: its load average was {load:.2f} when the run started, so other processes "
        "were using the CPUs. Every figure is lower, and every latency percentile wider, than this machine can "
        "do; the ratios between configurations measured in the same run are the more telling figures.",
        "",
    ]


def markdown(results: Results, plot: Path | None, output: Path) -> str:
    opts = results.options
    parts: list[str] = [
        "# Benchmarks",
        "",
        f"Measured {results.started} in {results.seconds / 60:.1f} minutes by:",
        "",
        f"```\n{results.command}\n```",
        "",
        "Every figure below comes from that one run on the machine described under Machine. "
        "See docs/benchmark.md for how each number is measured and what it means.",
        "",
        *_busy_warning(results),
        "## Targets",
        "",
        _table(
            ["target", "measured", "required", "verdict"],
            [[t.name, t.measured, t.required, _verdict(t.met)] for t in targets(results)],
        ),
        "",
        "## Machine",
        "",
        _table(
            ["", ""],
            [[k, v] for k, v in results.machine.items()] + [["load average at end", results.load_average_after]],
        ),
        "",
    ]
    parts += _ceiling_section(results, opts)
    parts += _server_section(results, plot, output, opts)
    parts += _protocol_section(results, opts)
    parts += _prediction_log_section(results, opts)
    parts += _phone_section(results)
    parts += _cold_section(results)
    parts += _memory_section(results)
    parts += [
        "## How to read this",
        "",
        "- *images/s* is completed requests (one 640x480 JPEG each, posted as the raw body) per second of the "
        "measured run; warm-up runs are not counted.",
        "- *server CPUs* is the CPU time (user + system, from /proc) of the server process and its image decoder "
        "processes, divided by the run's length: "
        "how many cores it kept busy. *wrk CPUs* is the load generator's, from the kernel (wait4) when it exits; "
        "it stays a small fraction of the server's, so the load generator did not starve the server.",
        "- *images per CPU-second* is images served per second of server CPU time: speed per CPU, which does not "
        "depend on how many cores the machine has or how busy other processes kept them.",
        "- Latency percentiles are wrk's, per request, from sending the request to the last byte of the answer.",
        "",
    ]
    return "\n".join(parts) + peers_section(output) + kept_section(output)


def kept_section(output: Path) -> str:
    """The hand-written ``KEPT_SECTION`` of the report at ``output``, with the blank line before it, or ''."""
    previous = output.read_text(encoding="utf-8") if output.is_file() else ""
    start = previous.find(f"\n{KEPT_SECTION}\n")
    return previous[start:] if start >= 0 else ""


def peers_section(output: Path) -> str:
    """The ``PEERS_SECTION`` of the report at ``output`` (to the next section), with the blank line before it, or ''."""
    previous = output.read_text(encoding="utf-8") if output.is_file() else ""
    start = previous.find(f"\n{PEERS_SECTION}\n")
    if start < 0:
        return ""
    end = previous.find("\n## ", start + 1)
    return previous[start:end] if end >= 0 else previous[start:]


def _ceiling_section(results: Results, opts: dict[str, Any]) -> list[str]:
    parts = ["## In-process ceiling", ""]
    if not results.ceilings:
        return [*parts, "Not measured in this run.", ""]
    batch_sizes = sorted({b for c in results.ceilings.values() for b in c.model})
    model_rows = []
    for name, c in results.ceilings.items():
        for callers, rates in ((1, c.model), (c.parallel_calls, c.model_parallel)):
            if rates:
                model_rows.append(
                    [
                        name,
                        str(callers),
                        *(
                            f"{rates[b].per_second:,.1f} ({rates[b].ms_per_image:.2f} ms)" if b in rates else "-"
                            for b in batch_sizes
                        ),
                    ]
                )
    parts += [
        f"The model alone (`Classifier.probabilities` on prepared 224x224 images, {opts['model_seconds']} s per "
        "batch size), images/s (wall-clock ms per image). *Callers* is how many threads call the model at once. "
        "ONNX Runtime runs each call on one thread and as many calls side by side as there are CPUs (so does the "
        "server's batcher; see `backend/classifier/_runtimes.py`), and so does OpenVINO (`RUNTIME=openvino`, the "
        "same ONNX file: one single-threaded stream per CPU); eager PyTorch spreads each call over every CPU, one "
        "call at a time.",
        "",
        _table(["runtime", "callers", *(f"batch {b}" for b in batch_sizes)], model_rows),
        "",
        f"The whole pipeline on a 640x480 JPEG (`Classifier.prepare` = decode + preprocess, then "
        f"`Classifier.probabilities`), {opts['pipeline_seconds']} s each. *Sequential*: one thread does "
        "everything, one image or batch after another; *overlapped*: decoding runs on a thread pool (one thread "
        "per CPU, as in the server) while the model runs, on as many model threads as the runtime runs calls "
        "side by side. **The ceiling is the higher of the two**, and the reference for the server.",
        "",
    ]
    rows = []
    for name, c in results.ceilings.items():
        seq, over = c.best("sequential"), c.best("overlapped")
        rows.append(
            [
                name,
                f"{seq.rate.per_second:,.1f} (batch {seq.batch_size})",
                f"{over.rate.per_second:,.1f} (batch {over.batch_size}, {over.model_threads} model threads)",
                f"**{c.ceiling.rate.per_second:,.1f}** ({c.ceiling.mode})",
                f"{c.single_image_ms:.2f}",
                ", ".join(f"{label}: {ms:.2f}" for label, ms in c.prepare_ms.items()),
            ]
        )
    parts += [
        _table(
            [
                "runtime",
                "sequential images/s",
                "overlapped images/s",
                "ceiling images/s",
                "one image, median ms",
                "decode + preprocess, median ms",
            ],
            rows,
        ),
        "",
    ]
    return parts


def _server_section(results: Results, plot: Path | None, output: Path, opts: dict[str, Any]) -> list[str]:
    parts = [
        "## Server over HTTP",
        "",
        f"`python -m backend` (uvicorn, one process) on 127.0.0.1, loaded by wrk (one thread) posting a 640x480 "
        f"JPEG as the raw body; each run {opts['duration']} s after a {opts['warmup']} s warm-up at the same "
        "concurrency. Configurations:",
        "",
    ]
    parts += [f"- **{c.key}**: {c.title}" for c in results.configs]
    parts.append("")
    rows = [
        [
            r.config,
            str(r.clients),
            f"**{r.per_second:,.1f}**",
            _num(r.p50_ms, 2),
            _num(r.p95_ms, 2),
            _num(r.p99_ms, 2),
            f"{r.requests:,}",
            str(r.errors),
            f"{r.server_cores:.2f}",
            f"{r.wrk_cores:.2f}",
            f"{r.per_cpu_second:,.1f}",
        ]
        for r in results.load
        if r.image == "640x480"
    ]
    parts += [
        _table(
            [
                "config",
                "clients",
                "images/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "requests",
                "errors",
                "server CPUs",
                "wrk CPUs",
                "images per CPU-second",
            ],
            rows,
        ),
        "",
    ]
    if plot is not None:
        parts += [f"![throughput against concurrency]({os.path.relpath(plot, output.parent)})", ""]
    return parts


def _protocol_section(results: Results, opts: dict[str, Any]) -> list[str]:
    parts = ["## Standard protocols", ""]
    totals = results.route_totals()
    predict = totals.get("predict")
    if predict is None:
        return [*parts, "Not measured in this run.", ""]
    rounds = max(sum(1 for r in results.protocols if r.route == key) for key in totals)
    rows = [
        [
            f"`{key}`",
            results.routes.get(key, ""),
            f"**{r.per_second:,.1f}**",
            f"{_ratio(r.per_second, predict.per_second):.2f}x",
            _num(r.p50_ms, 2),
            _num(r.p99_ms, 2),
            f"{r.requests:,}",
            str(r.errors),
            f"{r.server_cores:.2f}",
            f"{r.per_cpu_second:,.1f}",
        ]
        for key, r in totals.items()
    ]
    return [
        *parts,
        f"The same classification asked for through each protocol, on one fast server, by wrk (one thread, "
        f"`bench/post_body.lua`) with {predict.clients} connections posting the {predict.image} JPEG: "
        f"{rounds} round(s) of the routes in turn, each run {opts['duration']} s after a {opts['warmup']} s "
        "warm-up on its own route. images/s is over all rounds; latencies are the median of the rounds'.",
        "",
        _table(
            [
                "route",
                "request",
                "images/s",
                "vs /predict",
                "p50 ms",
                "p99 ms",
                "requests",
                "errors",
                "server CPUs",
                "images per CPU-second",
            ],
            rows,
        ),
        "",
    ]


def _prediction_log_section(results: Results, opts: dict[str, Any]) -> list[str]:
    parts = ["## Prediction log", ""]
    totals = results.prediction_log_totals()
    off, on = totals.get("fast"), totals.get(PREDICTION_LOG)
    if off is None or on is None:
        return [*parts, "Not measured in this run.", ""]
    rounds = sum(1 for r in results.prediction_log if r.config == "fast")
    rows = [
        [
            title,
            f"**{r.per_second:,.1f}**",
            f"{_ratio(r.per_second, off.per_second):.3f}x",
            _num(r.p50_ms, 2),
            _num(r.p99_ms, 2),
            f"{r.requests:,}",
            str(r.errors),
            f"{r.server_cores:.2f}",
        ]
        for title, r in (("off (the defaults)", off), ("on (PREDICTION_LOG_DIR set)", on))
    ]
    return [
        *parts,
        f"The fast server against the same with the prediction log on (a Parquet record per image, written by "
        f"a thread; the decoders compute the image statistics), {off.clients} connections posting the "
        f"{off.image} JPEG: {rounds} round(s) of the two servers in turn, each run {opts['duration']} s after a "
        f"{opts['warmup']} s warm-up. images/s is over all rounds; latencies are the median of the rounds'. "
        f"The logging server wrote {results.prediction_log_records:,} records.",
        "",
        _table(["prediction log", "images/s", "vs off", "p50 ms", "p99 ms", "requests", "errors", "server CPUs"], rows),
        "",
    ]


def _phone_section(results: Results) -> list[str]:
    parts = ["## Latency of a 12-megapixel photo", ""]
    rows = []
    for config in (c.key for c in results.configs):
        vga, phone = results.find(config, "640x480", 1), results.find(config, "4032x3024", 1)
        if vga and phone:
            rows.append(
                [
                    config,
                    f"{vga.p50_ms:.2f} / {vga.p95_ms:.2f} / {vga.p99_ms:.2f}",
                    f"{phone.p50_ms:.2f} / {phone.p95_ms:.2f} / {phone.p99_ms:.2f}",
                    f"{_ratio(phone.p50_ms, vga.p50_ms):.2f}x",
                ]
            )
    if not rows:
        return [*parts, "Not measured in this run.", ""]
    return [
        *parts,
        "One client, one photo at a time: a 4032x3024 JPEG (a real photo upscaled to a phone camera's size) "
        "against the same photo at 640x480. Large JPEGs are decoded at reduced scale (libjpeg DCT scaling), so "
        "most of the difference left is upload and entropy decoding.",
        "",
        _table(["config", "640x480 p50 / p95 / p99 ms", "4032x3024 p50 / p95 / p99 ms", "p50 ratio"], rows),
        "",
    ]


def _cold_section(results: Results) -> list[str]:
    parts = ["## Cold start", ""]
    if not results.cold_starts:
        return [*parts, "Not measured in this run.", ""]
    rows = [
        [config, f"{statistics.mean(runs):.2f}", ", ".join(f"{s:.2f}" for s in runs)]
        for config, runs in results.cold_starts.items()
    ]
    return [
        *parts,
        "From starting `python -m backend` to `GET /ready` answering 200 (model loaded and warmed up), with the "
        "ONNX export already in the model cache as in the container image; a fresh process each time.",
        "",
        _table(["config", "mean s", "each start, s"], rows),
        "",
    ]


def _memory_section(results: Results) -> list[str]:
    parts = ["## Memory", ""]
    if not results.memory:
        return [*parts, "Not measured in this run.", ""]
    return [
        *parts,
        "Memory of a fresh fast server and its image decoder processes (proportional set size, so the pages "
        "the decoders share are counted once) while it answers requests from 4 concurrent clients, "
        "cycling through the cat and espresso photos at 320x240, 640x480, 1920x1080 and 4032x3024.",
        "",
        _table(
            ["requests served", "memory MiB"],
            [[f"{s.requests:,}", f"{s.rss_bytes / 2**20:.1f}"] for s in results.memory],
        ),
        "",
    ]


def console_summary(results: Results) -> str:
    """The tables worth seeing in a terminal: targets and the server runs."""
    lines = ["", "target".ljust(92) + "measured".ljust(44) + "required".ljust(22) + "verdict"]
    for t in targets(results):
        lines.append(f"{t.name[:90]:<92}{t.measured[:42]:<44}{t.required[:20]:<22}{_verdict(t.met)}")
    lines += [
        "",
        f"{'config':<8}{'image':>11}{'clients':>9}{'images/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'srv CPUs':>10}{'wrk CPUs':>10}",
    ]
    for r in results.load:
        lines.append(
            f"{r.config:<8}{r.image:>11}{r.clients:>9}{r.per_second:>11.1f}{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}"
            f"{r.p99_ms:>9.2f}{r.errors:>8}{r.server_cores:>10.2f}{r.wrk_cores:>10.2f}"
        )
    for key, r in results.route_totals().items():
        lines.append(
            f"route {key:<12}{r.clients:>4} clients {r.per_second:>9.1f} images/s  p50 {r.p50_ms:.2f} ms  "
            f"errors {r.errors}"
        )
    for name, c in results.ceilings.items():
        lines.append(
            f"in-process {name}: ceiling {c.ceiling.rate.per_second:.1f} images/s ({c.ceiling.mode}, batch "
            f"{c.ceiling.batch_size}); model alone best {c.best_model[2].per_second:.1f} images/s at batch "
            f"{c.best_model[1]} with {c.best_model[0]} caller(s); one image {c.single_image_ms:.2f} ms"
        )
    if results.batch:
        b = results.batch
        lines.append(
            f"batch job ({b.runtime}, one task): {b.per_second:.1f} images/s over {b.images:,} images; "
            f"model and decoders loaded in {b.load_seconds:.2f} s"
        )
    for config, runs in results.cold_starts.items():
        lines.append(f"cold start {config}: {statistics.mean(runs):.2f} s (mean of {len(runs)})")
    return "\n".join(lines)


def plot_throughput(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.2), dpi=120)
    for config in results.configs:
        points = sorted(
            (r.clients, r.per_second) for r in results.load if r.config == config.key and r.image == "640x480"
        )
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{config.key}: {config.title}")
    styles = {
        "onnx": ("black", "--", "ONNX Runtime"),
        "openvino": ("tab:blue", "-.", "OpenVINO"),
        "torch": ("gray", ":", "eager PyTorch"),
    }
    for name, ceiling in results.ceilings.items():
        color, dashes, label = styles.get(name, ("black", "-.", name))
        ax.axhline(
            ceiling.ceiling.rate.per_second,
            color=color,
            linestyle=dashes,
            linewidth=1,
            label=f"in-process ceiling, {label}",
        )
    clients = sorted({r.clients for r in results.load})
    if clients:
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
    ax.set_xlabel("concurrent clients (wrk connections)")
    ax.set_ylabel("images/s (640x480 JPEG)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Throughput against concurrency\n{results.machine.get('CPU', '')}, {results.machine.get('CPUs', '')}",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def to_json(results: Results) -> str:
    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            data = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
            for name in ("per_second", "ms_per_image", "ceiling"):
                if hasattr(type(value), name) and isinstance(getattr(type(value), name), property):
                    data[name] = encode(getattr(value, name))
            return data
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    payload = encode(results)
    payload["targets"] = [encode(t) for t in targets(results)]
    return json.dumps(payload, indent=2)


def wrk_path() -> str | None:
    return shutil.which("wrk")
