"""Installing the peers, starting each contender, checking its answer and loading it with wrk, round by round."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

from backend.classifier import ModelSpec, load_classifier
from backend.classifier._export import ensure_onnx
from bench.peers.contenders import REQUIREMENTS, Contender, Launch, PeerRoute, Skip
from bench.server import LoadResult, Server, ServerConfig, http_status, run_wrk

logger = logging.getLogger(__name__)

STAMP = ".installed"  # in each peer's venv: the hash of what was installed, so a changed requirements file reinstalls


def uv_path() -> str | None:
    """uv: beside this interpreter (the project's venv has it), else from PATH."""
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.is_file() else shutil.which("uv")


def ensure_venv(contender: Contender, install: bool = True, timeout: float = 900) -> None:
    """``.venv-peers/<key>`` holding exactly ``bench/peers/requirements/<key>.txt`` (hash-checked, from PyPI
    or uv's cache), made from this interpreter; nothing done when its stamp matches. Raises :class:`Skip`."""
    requirements = REQUIREMENTS / f"{contender.key}.txt"
    wanted = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()
    stamp = contender.venv / STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == wanted:
        return
    if not install:
        raise Skip(f"{contender.venv} is missing or out of date, and installing was turned off (--no-install)")
    uv = uv_path()
    if uv is None:
        raise Skip("uv is needed to make the peers' venvs (make venv installs it in .venv)")
    started = time.perf_counter()
    logger.info("installing %s into %s", contender.name, contender.venv)
    steps = [
        [uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(contender.venv)],
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(contender.python),
            "--require-hashes",
            "-r",
            str(requirements),
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise Skip(f"installing {contender.name} failed: {' '.join(step[:3])}: {done.stderr.strip()[-800:]}")
    stamp.write_text(wanted + "\n", encoding="utf-8")
    logger.info("installed %s in %.1f s", contender.name, time.perf_counter() - started)


class PeerServer(Server):
    """One contender's server process (in a session of its own, so stopping it stops every process it started),
    ready when its ready endpoint answers 200 and then a classification is answered."""

    def __init__(
        self, contender: Contender, launch: Launch, probe: PeerRoute, workdir: Path, ready_timeout: float
    ) -> None:
        self.config = ServerConfig(contender.key, contender.name, {})
        self.contender = contender
        self.port = launch.port
        self.url = f"http://127.0.0.1:{launch.port}"
        self._launch = launch
        self._probe = probe
        self._workdir = workdir
        self._ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = float("nan")  # to the ready endpoint's first 200
        self.first_answer_seconds = float("nan")  # to the first classification answered
        self.log_path = workdir / f"server-{contender.key}-{launch.port}.log"

    def __enter__(self) -> PeerServer:
        return self.start()

    def start(self) -> PeerServer:
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self._process = subprocess.Popen(
                self._launch.command,
                cwd=self._launch.cwd,
                env=self._launch.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            self._wait(started)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _alive_or_raise(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.contender.name} exited with {self._process.returncode}:\n{tail}")

    def _wait(self, started: float) -> None:
        deadline = started + self._ready_timeout
        while http_status(self.port, self.contender.ready_path, timeout=1.0) != 200:
            self._alive_or_raise()
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"{self.contender.name}: {self.contender.ready_path} not 200 in {self._ready_timeout} s"
                )
            time.sleep(0.01)
        self.startup_seconds = time.perf_counter() - started
        while True:  # some ready endpoints answer before a worker can (TorchServe's /ping)
            with contextlib.suppress(OSError):
                status, _, _ = self._probe.ask(self.port, timeout=max(1.0, deadline - time.perf_counter()))
                if status == 200:
                    break
            self._alive_or_raise()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.contender.name}: no classification answered in {self._ready_timeout} s")
            time.sleep(0.01)
        self.first_answer_seconds = time.perf_counter() - started

    def rss_sum_bytes(self) -> int:
        """Resident set sizes of the process tree, added up (pages shared between processes counted in each)."""
        total = 0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def stop(self) -> None:
        """SIGTERM to the server's whole session, SIGKILL to whatever is left after 5 s (how a server shuts down
        is not measured; LitServe's workers, for one, outlive a SIGTERM for 30 s)."""
        if self._process is None:
            return
        group = self._process.pid  # start_new_session: the session's and group's id is the server's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.perf_counter() + 5
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        while _group_alive(group) and time.perf_counter() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        if self._process.poll() is None:
            self._process.wait()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(p.info["pid"] != os.getpid() and _pgid(p.info["pid"]) == group for p in psutil.process_iter(["pid"]))


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@dataclass(frozen=True)
class Start:
    """One start of one contender: its cold start, its memory after that round's load, its answer."""

    contender: str
    round: int
    ready_s: float
    first_answer_s: float
    pss_bytes: int
    rss_bytes: int
    failed_starts: tuple[str, ...] = ()  # earlier attempts in this round that never answered, and why


@dataclass
class ContenderInfo:
    name: str
    version: str
    configuration: str
    is_ours: bool
    routes: dict[str, str]  # route key: the request, in a few words


@dataclass
class PeerResults:
    command: str
    started: str
    options: dict[str, float]
    machine: dict[str, str]
    expected: str = ""  # the photo's top class, from the project's classifier in-process
    contenders: dict[str, ContenderInfo] = field(default_factory=dict)
    load: list[LoadResult] = field(default_factory=list)  # config: contender key, route: route key
    starts: list[Start] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # contender key: why
    seconds: float = 0.0
    load_average_after: str = ""


def expected_top1(jpeg: bytes, cache_dir: Path) -> tuple[int, str]:
    """The photo's most likely class as this project's classifier gives it (ONNX Runtime, in-process)."""
    classifier = load_classifier(ModelSpec(), runtime="onnx", cache_dir=cache_dir, threads=1)
    top = classifier.classify([jpeg], top_k=1)[0][0]
    return top.index, top.label


def model_dir(cache_dir: Path) -> Path:
    """The project's ONNX export of the default model (exported into ``cache_dir`` first if missing)."""
    return ensure_onnx(ModelSpec(), cache_dir)


def answer_is(route: PeerRoute, server: PeerServer, expected: int) -> None:
    status, body, headers = route.ask(server.port)
    if status != 200:
        raise RuntimeError(f"{server.contender.name} {route.route.path}: HTTP {status}: {body[:300]!r}")
    got = route.top1(body, headers)
    if got != expected:
        raise RuntimeError(f"{server.contender.name} {route.route.path}: top class {got}, ours {expected}")


def run_contender_round(
    contender: Contender,
    routes: list[PeerRoute],
    round_number: int,
    model: Path,
    cache_dir: Path,
    workdir: Path,
    wrk: str,
    expected: int,
    clients: tuple[int, int],
    warmup: int,
    duration: int,
    ready_timeout: float,
    image_label: str,
) -> tuple[Start, list[LoadResult]]:
    """Start ``contender``, check each route's answer, load each route at each concurrency, measure memory, stop.

    A peer that dies or never answers while starting is started once more (PyTriton's model proxy, on a busy
    machine, sometimes loses a race for its handshake socket and exits); the report says so. Ours is not."""
    failed: list[str] = []
    attempts = 1 if contender.is_ours else 2
    while True:
        launch = contender.launch(workdir, model, cache_dir)
        server = PeerServer(contender, launch, routes[0], workdir, ready_timeout)
        try:
            server.start()
            break
        except (RuntimeError, TimeoutError) as error:
            failed.append(" ".join(str(error).split())[-300:])
            if len(failed) >= attempts:
                raise
            logger.warning("%s did not start (%s); starting it again", contender.name, failed[-1][-200:])
    loads: list[LoadResult] = []
    try:  # started above
        for route in routes:
            answer_is(route, server, expected)
        for route in routes:
            for count in clients:
                logger.info("round %d: %s %s, %d clients", round_number, contender.key, route.route.key, count)
                run_wrk(wrk, server, route.route.body, image_label, count, warmup, workdir, route.route)
                result = run_wrk(wrk, server, route.route.body, image_label, count, duration, workdir, route.route)
                if result.errors:  # which kind: wrk's own line (connect, read, write, status, timeout)
                    out = workdir / f"wrk-{contender.key}-{route.route.key}-{image_label}-{count}.out"
                    logger.warning("  %s", next((x for x in out.read_text().splitlines() if "BENCH_RESULT" in x), ""))
                logger.info(
                    "  %.1f images/s, p50 %.2f ms, p99 %.2f ms, errors %d, server %.2f CPUs",
                    result.per_second,
                    result.p50_ms,
                    result.p99_ms,
                    result.errors,
                    result.server_cores,
                )
                loads.append(result)
        start = Start(
            contender.key,
            round_number,
            server.startup_seconds,
            server.first_answer_seconds,
            server.rss_bytes(),
            server.rss_sum_bytes(),
            tuple(failed),
        )
    finally:
        server.stop()
    logger.info(
        "  %s: ready %.2f s, first answer %.2f s, memory %.0f MiB (PSS), %.0f MiB (RSS summed)",
        contender.key,
        start.ready_s,
        start.first_answer_s,
        start.pss_bytes / 2**20,
        start.rss_bytes / 2**20,
    )
    return start, loads
