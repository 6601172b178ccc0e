"""``python -m bench --peers``: this project beside BentoML, LitServe, TorchServe and PyTriton, interleaved rounds;
writes the Peers section of BENCHMARKS.md (the rest of the report is left as it is)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

from backend.config import Settings
from bench import photos as photo_maker
from bench.peers import report
from bench.peers.contenders import PEERS, Contender, Skip, ours
from bench.peers.harness import (
    ContenderInfo,
    PeerResults,
    ensure_venv,
    expected_top1,
    model_dir,
    run_contender_round,
)
from bench.report import load_average, machine_facts, wrk_path

logger = logging.getLogger("bench.peers")

ROOT = Path(__file__).resolve().parent.parent.parent
FULL = {"rounds": 3, "warmup": 2, "duration": 8}
QUICK = {"rounds": 1, "warmup": 1, "duration": 3}
CLIENTS = (1, 16)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench --peers",
        description="This project's server beside its peers (BentoML, LitServe, TorchServe, PyTriton), each in "
        "its own venv (.venv-peers/), on the same photo, model file and preprocessing, in interleaved rounds; "
        "writes the Peers section of BENCHMARKS.md. About 12 minutes (the first run also installs the peers).",
    )
    parser.add_argument("--peers", action="store_true", required=True, help="compare with the peers (this mode)")
    parser.add_argument("--quick", action="store_true", help="one round of shorter runs")
    parser.add_argument(
        "--peer",
        action="append",
        choices=sorted(PEERS),
        default=None,
        help="only this peer (repeatable; default: every peer)",
    )
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=int, default=None, help=f"default {default}, {QUICK[name]} with --quick")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="the report (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: MODEL_CACHE_DIR's default)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the servers' logs and wrk's output here (default: a temporary folder)",
    )
    parser.add_argument("--no-install", action="store_true", help="skip a peer whose venv is missing or out of date")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds a server may take to answer")
    parser.add_argument("--wrk", default=wrk_path(), help="the wrk executable (default: from PATH)")
    parser.add_argument("--fail-on-targets", action="store_true", help="exit with status 2 when a target is not met")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, default in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not args.wrk:
        parser.error("wrk is not installed: apt-get install -y wrk (or pass --wrk PATH)")
    return args


def run(args: argparse.Namespace, command: str) -> PeerResults:
    started = time.perf_counter()
    cache_dir: Path = args.cache_dir or Settings().model_cache_dir
    results = PeerResults(
        command=command,
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        options={name: getattr(args, name) for name in FULL},
        machine=machine_facts(args.wrk),
    )
    photo = photo_maker.photo("chelsea", photo_maker.VGA)
    model = model_dir(cache_dir)
    expected, label = expected_top1(photo.jpeg, cache_dir)
    results.expected = f"{label} (class {expected})"

    contenders: list[Contender] = [*ours()]
    for key in args.peer or sorted(PEERS):
        peer = PEERS[key]()
        try:
            peer.check()
            ensure_venv(peer, install=not args.no_install)
        except Skip as reason:
            logger.warning("skipping %s: %s", peer.name, reason)
            results.skipped[key] = str(reason)
            continue
        contenders.append(peer)

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
        routes = {}
        for contender in list(contenders):
            try:
                contender.prepare(workdir, model)
            except Exception as error:  # a peer that cannot be set up is skipped, saying why
                logger.warning("skipping %s: %s", contender.name, error)
                results.skipped[contender.key] = f"preparing it failed: {error}"
                contenders.remove(contender)
                continue
            routes[contender.key] = contender.routes(photo.jpeg, workdir)
            results.contenders[contender.key] = ContenderInfo(
                contender.name,
                contender.version(),
                contender.configuration,
                contender.is_ours,
                {r.route.key: r.route.title for r in routes[contender.key]},
            )
        for round_number in range(1, args.rounds + 1):
            # each round starts one further down the list, so no contender always follows the same one
            shift = (round_number - 1) % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                if contender.key in results.skipped:
                    continue
                try:
                    start, loads = run_contender_round(
                        contender,
                        routes[contender.key],
                        round_number,
                        model,
                        cache_dir,
                        workdir,
                        args.wrk,
                        expected,
                        CLIENTS,
                        args.warmup,
                        args.duration,
                        args.ready_timeout,
                        photo.label,
                    )
                except Exception as error:
                    if contender.is_ours:
                        raise
                    logger.warning("dropping %s: %s", contender.name, error)
                    results.skipped[contender.key] = f"round {round_number}: {str(error)[-1500:]}"
                    continue
                results.starts.append(start)
                results.load.extend(loads)
    # figures of a contender dropped in a later round are not kept: it is reported as skipped, saying why
    results.load = [r for r in results.load if r.config not in results.skipped]
    results.starts = [s for s in results.starts if s.contender not in results.skipped]
    for key in results.skipped:
        results.contenders.pop(key, None)
    results.seconds = time.perf_counter() - started
    results.load_average_after = load_average()
    return results


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = run(args, command.strip())
    report.write_section(args.output, report.section(results))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(results), indent=2), encoding="utf-8")
    print(report.console_summary(results))
    print(f"\nwrote the Peers section of {args.output}")
    failed = sum(r.errors for r in results.load)
    if failed:
        print(f"{failed} requests failed during the load runs: the figures are not valid", file=sys.stderr)
        sys.exit(1)
    if args.fail_on_targets and not all(t.met for t in report.targets(results)):
        sys.exit(2)
