"""``python -m bench [--quick]``: run every measurement, write BENCHMARKS.md and the plot, print the tables."""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

from backend.config import Settings
from bench import photos as photo_maker
from bench.batch import measure_batch
from bench.inprocess import measure_runtime
from bench.report import (
    DEFAULT_RUNTIME,
    Results,
    console_summary,
    load_average,
    machine_facts,
    markdown,
    plot_throughput,
    targets,
    to_json,
    wrk_path,
)
from bench.server import (
    CONFIGS,
    FAST,
    LoadResult,
    Server,
    ServerConfig,
    cold_starts,
    measure_interleaved,
    measure_memory,
    measure_routes,
    prediction_log_config,
    protocol_routes,
    run_wrk,
)

logger = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
FULL = {
    "model_seconds": 2.0,
    "pipeline_seconds": 3.0,
    "warmup": 3,
    "duration": 10,
    "cold_starts": 3,
    "memory_requests": 1000,
    "protocol_rounds": 2,
    "log_rounds": 2,
}
QUICK = {
    "model_seconds": 0.5,
    "pipeline_seconds": 1.0,
    "warmup": 1,
    "duration": 3,
    "cold_starts": 2,
    "memory_requests": 250,
    "protocol_rounds": 1,
    "log_rounds": 1,
}


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _config(text: str) -> ServerConfig:
    """``NAME:KEY=VALUE,KEY=VALUE``: one more server configuration to load, on top of the defaults."""
    name, _, assignments = text.partition(":")
    env: dict[str, str] = {}
    for assignment in filter(None, assignments.split(",")):
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected NAME:KEY=VALUE,..., got {text!r}")
        env[key.strip().upper()] = value.strip()
    if not name.strip() or name.strip() in {c.key for c in CONFIGS}:
        raise argparse.ArgumentTypeError(f"give the configuration a new name, got {name!r}")
    title = "defaults with " + " ".join(f"{k}={v}" for k, v in env.items()) if env else "the defaults"
    return ServerConfig(name.strip(), title, env)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the classifier in-process and as a server over HTTP; write BENCHMARKS.md and a plot.",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes instead of about 5)")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="the report (default: %(default)s)")
    parser.add_argument(
        "--plot", type=Path, default=ROOT / "docs" / "bench-throughput.png", help="the PNG plot (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: MODEL_CACHE_DIR's default)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 2, 4, 8, 16, 32], help="model-alone batch sizes")
    parser.add_argument("--clients", type=_int_list, default=[1, 4, 16], help="concurrent clients for the server runs")
    for name, default in FULL.items():
        kind = float if isinstance(default, float) else int
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"default {default}, {QUICK[name]} with --quick",
        )
    parser.add_argument(
        "--also",
        type=_config,
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="one more server configuration to load like the others, e.g. batch1:MAX_BATCH_SIZE=1 (repeatable)",
    )
    parser.add_argument(
        "--in-process-only",
        action="store_true",
        help="measure only the in-process ceilings (every runtime), no server; sections of the rest say so",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="instead: this server beside BentoML, LitServe, TorchServe and PyTriton (python -m bench --peers --help)",
    )
    parser.add_argument("--wrk", default=wrk_path(), help="the wrk executable (default: from PATH)")
    parser.add_argument(
        "--fail-on-targets",
        action="store_true",
        help="exit with status 2 when a target is not met (for a quiet machine)",
    )
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, default in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not args.wrk and not args.in_process_only:
        parser.error("wrk is not installed: apt-get install -y wrk (or pass --wrk PATH)")
    return args


def _measure_prediction_log(
    args: argparse.Namespace, fast: Server, cache_dir: Path, workdir: Path, image: Path, label: str
) -> tuple[list[LoadResult], int]:
    """The fast server against one with PREDICTION_LOG_DIR set, in turn; and the records the second wrote."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # only here: the rest of bench does without

    folder = workdir / "prediction-log"
    with Server(prediction_log_config(folder), cache_dir, workdir) as logged:
        rounds = measure_interleaved(
            args.wrk,
            [fast, logged],
            image,
            label,
            max(args.clients),
            args.log_rounds,
            args.warmup,
            args.duration,
            workdir,
        )
    # Stopped (SIGTERM): its shutdown wrote what was still queued.
    return rounds, sum(pq.read_metadata(f).num_rows for f in folder.rglob("*.parquet"))


def run(args: argparse.Namespace, command: str) -> Results:
    started = time.perf_counter()
    cache_dir: Path = args.cache_dir or Settings().model_cache_dir
    options = {name: getattr(args, name) for name in FULL}
    results = Results(
        command=command,
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        options=options,
        machine=machine_facts(args.wrk),
        memory_checkpoints=(args.memory_requests, 2 * args.memory_requests),
        configs=(*CONFIGS, *args.also),
    )
    vga = photo_maker.photo("chelsea", photo_maker.VGA)
    phone = photo_maker.photo("chelsea", photo_maker.PHONE_12MP)
    mixed = [
        photo_maker.photo(name, size)
        for name in ("chelsea", "coffee")
        for size in ((320, 240), (640, 480), (1920, 1080), (4032, 3024))
    ]

    # torch first: loading the ONNX classifier tunes glibc's allocator for the whole process (see
    # release_large_buffers_to_the_os), which is right for ONNX Runtime and slows eager PyTorch down.
    # The ONNX run's load_classifier exports the model into cache_dir if it is not there yet, before any
    # server below needs it; OpenVINO runs the same export.
    for runtime in ("torch", "onnx", "openvino"):
        logger.info("in-process ceiling, %s", runtime)
        results.ceilings[runtime] = measure_runtime(
            runtime,
            cache_dir,
            {vga.label: vga.jpeg, phone.label: phone.jpeg},
            vga=vga.label,
            batch_sizes=args.batch_sizes,
            model_seconds=args.model_seconds,
            pipeline_seconds=args.pipeline_seconds,
        )
    results.batch = measure_batch(cache_dir, vga.jpeg, DEFAULT_RUNTIME, results.ceilings, args.pipeline_seconds)
    if args.in_process_only:
        results.seconds = time.perf_counter() - started
        results.load_average_after = load_average()
        return results

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        vga_path, phone_path = vga.save(workdir), phone.save(workdir)
        for config in results.configs:
            with Server(config, cache_dir, workdir) as server:
                runs = [(vga_path, vga.label, clients) for clients in args.clients] + [(phone_path, phone.label, 1)]
                for path, label, clients in runs:
                    logger.info("%s server, %s, %d clients", config.key, label, clients)
                    run_wrk(args.wrk, server, path, label, clients, args.warmup, workdir)  # warm-up, not counted
                    result = run_wrk(args.wrk, server, path, label, clients, args.duration, workdir)
                    results.load.append(result)
                    logger.info(
                        "  %.1f images/s, p50 %.2f ms, p99 %.2f ms, errors %d, server %.2f CPUs, wrk %.2f CPUs",
                        result.per_second,
                        result.p50_ms,
                        result.p99_ms,
                        result.errors,
                        result.server_cores,
                        result.wrk_cores,
                    )
                if config is FAST:  # the standard protocols beside /predict, on the same server, interleaved
                    routes = protocol_routes(server, vga.jpeg, vga.label, workdir)
                    results.protocols = measure_routes(
                        args.wrk,
                        server,
                        routes,
                        vga.label,
                        max(args.clients),
                        args.protocol_rounds,
                        args.warmup,
                        args.duration,
                        workdir,
                    )
                    results.routes = {route.key: route.title for route in routes}
                    if args.log_rounds:  # the prediction log on against off (this server), interleaved
                        results.prediction_log, results.prediction_log_records = _measure_prediction_log(
                            args, server, cache_dir, workdir, vga_path, vga.label
                        )
        for config in (FAST, *(c for c in CONFIGS if c is not FAST)):
            logger.info("cold start, %s", config.key)
            results.cold_starts[config.key] = cold_starts(config, cache_dir, workdir, args.cold_starts)
        logger.info("memory, %d then %d requests", args.memory_requests, 2 * args.memory_requests)
        step = max(1, args.memory_requests // 4)
        checkpoints = sorted(
            {*range(step, 2 * args.memory_requests + 1, step), args.memory_requests, 2 * args.memory_requests}
        )
        with Server(FAST, cache_dir, workdir) as server:
            results.memory = measure_memory(server, [p.jpeg for p in mixed], checkpoints)
    results.seconds = time.perf_counter() - started
    results.load_average_after = load_average()
    return results


def main(argv: list[str] | None = None) -> None:
    if "--peers" in (sys.argv[1:] if argv is None else argv):  # its own options: python -m bench --peers --help
        from bench.peers.cli import main as compare_with_peers

        compare_with_peers(argv)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = run(args, command.strip())
    if args.plot:
        plot_throughput(results, args.plot)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown(results, args.plot, args.output), encoding="utf-8")
    if args.json:
        args.json.write_text(to_json(results), encoding="utf-8")
    print(console_summary(results))
    print(f"\nwrote {args.output} and {args.plot}")
    failed = sum(r.errors for r in (*results.load, *results.protocols))
    if failed:
        print(f"{failed} requests failed during the load runs: the figures are not valid", file=sys.stderr)
        sys.exit(1)
    if args.fail_on_targets and not all(t.met for t in targets(results)):
        sys.exit(2)
