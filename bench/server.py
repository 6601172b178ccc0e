"""The real server under load: ``python -m backend`` processes, driven by ``wrk`` over HTTP on 127.0.0.1.

``wrk`` (C, epoll, one thread here) posts a raw JPEG body on every request; its own CPU time is read
from the kernel when it exits (``wait4``), the server's from ``/proc`` (psutil) before and after each
run, so the report shows how little of the machine the load generator took.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from backend.config import Settings
from bench import wire

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).with_name("post_body.lua")  # any body, any headers: /predict and the protocols' routes
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerConfig:
    key: str
    title: str
    env: dict[str, str]


NAIVE = ServerConfig(
    "naive",
    "eager PyTorch, no batching (RUNTIME=torch MAX_BATCH_SIZE=1)",
    {"RUNTIME": "torch", "MAX_BATCH_SIZE": "1"},
)
FAST = ServerConfig("fast", "the defaults (OpenVINO, dynamic batching)", {})
CONFIGS = (NAIVE, FAST)
PREDICTION_LOG = "log"  # the fast server with the prediction log on (measured against FAST, interleaved)


def prediction_log_config(folder: Path) -> ServerConfig:
    return ServerConfig(
        PREDICTION_LOG,
        "the defaults with PREDICTION_LOG_DIR set (the prediction log on)",
        {"PREDICTION_LOG_DIR": str(folder)},
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def server_env(config: ServerConfig, port: int, cache_dir: Path) -> dict[str, str]:
    """The environment of a benchmarked server: this one without any setting of ours, then the config's."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in ours}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(HOST=HOST, PORT=str(port), MODEL_CACHE_DIR=str(cache_dir), ACCESS_LOG="false", **config.env)
    return env


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


class Server:
    """One ``python -m backend`` process on a free port (run from ``workdir``, so no ``.env`` applies)."""

    def __init__(self, config: ServerConfig, cache_dir: Path, workdir: Path, ready_timeout: float = 180.0) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._env = server_env(config, self.port, cache_dir)
        self._workdir = workdir
        self._ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = float("nan")
        self.log_path = workdir / f"server-{config.key}-{self.port}.log"

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "backend"], cwd=self._workdir, env=self._env, stdout=log, stderr=log
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        while time.perf_counter() - started < self._ready_timeout:
            if self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {self.config.key} server exited with {self._process.returncode}:\n{tail}")
            if http_status(self.port, "/ready", timeout=1.0) == 200:
                self.startup_seconds = time.perf_counter() - started
                return
            time.sleep(0.01)
        raise TimeoutError(f"the {self.config.key} server was not ready within {self._ready_timeout}s")

    @property
    def process(self) -> psutil.Process:
        assert self._process is not None
        return psutil.Process(self._process.pid)

    def _tree(self) -> list[psutil.Process]:
        """The server and the processes it started (its image decoders, and the fork server they come from)."""
        return [self.process, *self.process.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time of the server and its decoders (of those still running: a decoder replaced after an
        expensive image takes its CPU time with it; none are in these runs)."""
        total = 0.0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Memory of the server and its decoders: proportional set sizes, shared pages counted once."""
        total = 0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                total += process.memory_full_info().pss
        return total

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@dataclass(frozen=True)
class LoadResult:
    config: str
    image: str  # e.g. "640x480"
    clients: int
    requests: int
    seconds: float
    errors: int  # socket errors, timeouts and non-2xx answers
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float
    wrk_cpu_s: float
    route: str = "predict"  # a Route's key

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_cores(self) -> float:
        """How many CPUs the server kept busy on average."""
        return self.server_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Images per CPU-second the server used: speed per CPU, independent of idle time."""
        return self.requests / self.server_cpu_s if self.server_cpu_s else 0.0


@dataclass(frozen=True)
class Route:
    """One way of asking for the same classification: a route and the request body its clients send."""

    key: str
    title: str  # the request, in a few words
    path: str
    body: Path
    content_type: str = ""  # none at all when empty (tritonclient sends none)
    inference_header: int | None = None  # the Open Inference Protocol's Inference-Header-Content-Length

    @property
    def env(self) -> dict[str, str]:
        """What bench/post_body.lua reads."""
        header = "" if self.inference_header is None else str(self.inference_header)
        return {"BENCH_BODY": str(self.body), "BENCH_CONTENT_TYPE": self.content_type, "BENCH_INFERENCE_HEADER": header}


def predict_route(image: Path) -> Route:
    """``POST /predict`` with ``image`` as the raw body, as the benchmark's own load posts it."""
    return Route("predict", "`/predict`, the JPEG as the raw body", "/predict", image, "image/jpeg")


V2_CLASSES = 5  # the v2 request's classification output: the top 5, as /predict's default top_k


def model_name(server: Server) -> str:
    """The served model's name, from ``GET /model`` (the protocols' routes are named after it)."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        connection.request("GET", "/model")
        name: str = json.loads(connection.getresponse().read())["name"]
        return name
    finally:
        connection.close()


def protocol_routes(server: Server, image: bytes, label: str, workdir: Path) -> list[Route]:
    """``/predict`` and the standard protocols' routes, each sending ``image`` as its clients would."""
    name = model_name(server)
    raw = workdir / f"body-raw-{label}.jpg"
    raw.write_bytes(image)
    v2 = wire.v2_binary_request([image], V2_CLASSES, binary_output=True)  # tritonclient's default: binary out
    v2_path = workdir / f"body-v2-binary-{label}.bin"
    v2_path.write_bytes(v2.body)
    return [
        predict_route(raw),
        Route(
            "v2-binary",
            "Open Inference Protocol v2, binary as tritonclient sends it (JSON header + 4-byte-prefixed JPEG, "
            f"no Content-Type, top-{V2_CLASSES} classification output in binary)",
            f"/v2/models/{name}/infer",
            v2_path,
            inference_header=v2.header_length,
        ),
        Route("torchserve", "TorchServe, the JPEG as the raw body (no Content-Type)", f"/predictions/{name}", raw),
    ]


def measure_routes(
    wrk: str,
    server: Server,
    routes: list[Route],
    label: str,
    clients: int,
    rounds: int,
    warmup: int,
    seconds: int,
    workdir: Path,
) -> list[LoadResult]:
    """Each route in turn, ``rounds`` times (interleaved, so a change in the machine's load touches them alike),
    each run after a warm-up on its own route. One result per route and round."""
    results: list[LoadResult] = []
    for round_number in range(1, rounds + 1):
        for route in routes:
            logger.info(
                "%s server, %s, %d clients, round %d of %d", server.config.key, route.key, clients, round_number, rounds
            )
            run_wrk(wrk, server, route.body, label, clients, warmup, workdir, route)  # warm-up, not counted
            result = run_wrk(wrk, server, route.body, label, clients, seconds, workdir, route)
            logger.info("  %.1f images/s, p50 %.2f ms, errors %d", result.per_second, result.p50_ms, result.errors)
            results.append(result)
    return results


def measure_interleaved(
    wrk: str,
    servers: list[Server],
    image: Path,
    label: str,
    clients: int,
    rounds: int,
    warmup: int,
    seconds: int,
    workdir: Path,
) -> list[LoadResult]:
    """Each server in turn, ``rounds`` times (interleaved, so a change in the machine's load touches them alike),
    each run after a warm-up. One result per server and round (its ``config`` says which)."""
    results: list[LoadResult] = []
    for round_number in range(1, rounds + 1):
        for server in servers:
            logger.info(
                "%s server, %s, %d clients, round %d of %d", server.config.key, label, clients, round_number, rounds
            )
            run_wrk(wrk, server, image, label, clients, warmup, workdir)  # warm-up, not counted
            result = run_wrk(wrk, server, image, label, clients, seconds, workdir)
            logger.info("  %.1f images/s, p50 %.2f ms, errors %d", result.per_second, result.p50_ms, result.errors)
            results.append(result)
    return results


def run_wrk(
    wrk: str,
    server: Server,
    image: Path,
    image_label: str,
    clients: int,
    seconds: int,
    workdir: Path,
    route: Route | None = None,
) -> LoadResult:
    """``clients`` connections posting ``image`` (or ``route``'s body to its path) as fast as answers come
    back, for ``seconds``."""
    route = route or predict_route(image)
    out_path = workdir / f"wrk-{server.config.key}-{route.key}-{image_label}-{clients}.out"
    command = [
        wrk,
        "-t1",  # one thread handles these connection counts, and leaves the CPUs to the server
        f"-c{clients}",
        f"-d{max(1, seconds)}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        f"{server.url}{route.path}",
    ]
    env = {**os.environ, **route.env}
    server_cpu_before = server.cpu_seconds()
    with out_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    watchdog = threading.Timer(seconds + 60, process.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)  # the child's own CPU time, from the kernel
    finally:
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = server.cpu_seconds() - server_cpu_before
    text = out_path.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}:\n{text[-2000:]}")
    line = next((x for x in text.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{text[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    result = LoadResult(
        config=server.config.key,
        image=image_label,
        clients=clients,
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        errors=int(errors),
        mean_ms=raw["mean_us"] / 1000,
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        server_cpu_s=server_cpu,
        wrk_cpu_s=usage.ru_utime + usage.ru_stime,
        route=route.key,
    )
    if result.errors:
        logger.warning("%s server, %d clients: %d requests failed", result.config, clients, result.errors)
    return result


@dataclass(frozen=True)
class MemorySample:
    requests: int
    rss_bytes: int


def measure_memory(
    server: Server, bodies: list[bytes], checkpoints: list[int], concurrency: int = 4
) -> list[MemorySample]:
    """Resident memory of the server after each number of requests in ``checkpoints`` (bodies sent in turn)."""
    local = threading.local()

    def post(index: int) -> None:
        connection: http.client.HTTPConnection | None = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
        body = bodies[index % len(bodies)]
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"request {index}: HTTP {response.status}: {payload[:300]!r}")

    samples = [MemorySample(0, server.rss_bytes())]
    done = 0
    with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-memory") as pool:
        for target in checkpoints:
            list(pool.map(post, range(done, target)))
            done = target
            samples.append(MemorySample(done, server.rss_bytes()))
            logger.info("memory after %d requests: %.1f MiB", done, samples[-1].rss_bytes / 2**20)
    return samples


def cold_starts(config: ServerConfig, cache_dir: Path, workdir: Path, runs: int) -> list[float]:
    """Seconds from process start to ``/ready`` answering 200, for ``runs`` fresh processes."""
    seconds: list[float] = []
    for _ in range(runs):
        with Server(config, cache_dir, workdir) as server:
            seconds.append(server.startup_seconds)
    return seconds
