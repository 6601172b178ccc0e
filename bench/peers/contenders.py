"""The servers compared: this project (its defaults, and ``RUNTIME=onnx``) and each peer, with its configuration.

Every peer runs the same work inside its own virtualenv (``.venv-peers/<key>``, installed from the fully
pinned ``bench/peers/requirements/<key>.txt``): the project's ONNX export on ONNX Runtime, one
single-threaded session per worker or model instance, two of them (one per CPU), with the project's own
decode and preprocessing (``bench/peers/services/_model.py``). Each is configured with its documented way
of batching and of using two CPUs; :attr:`Contender.configuration` says how, and the report prints it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from backend.config import Settings
from bench import wire
from bench.server import HOST, Route, ServerConfig, free_port, server_env

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES = Path(__file__).with_name("services")
REQUIREMENTS = Path(__file__).with_name("requirements")
VENVS = ROOT / ".venv-peers"
PREPROCESS = ROOT / "backend" / "classifier" / "_preprocess.py"

WORKERS = 2  # worker processes or model instances: one per CPU, each with one single-threaded session
MAX_BATCH_SIZE = 8  # each peer's batcher: up to 8 images, as their docs suggest for small CNNs on CPUs
BATCH_WAIT_MS = 2  # the longest a peer's batcher waits for a fuller batch, where it must wait at all
MULTIPART_BOUNDARY = "bench-peers-0a1b2c3d4e5f"


class Skip(Exception):
    """A contender that cannot run here, and why."""


def top1_of_predictions(body: bytes, headers: dict[str, str]) -> int:
    """``{"predictions": [{"index": ...}, ...]}`` (the peers' services), or a list of those (a batch)."""
    answer = json.loads(body)
    if isinstance(answer, list):
        answer = answer[0]
    index: int = answer["predictions"][0]["index"]
    return index


def top1_of_ours(body: bytes, headers: dict[str, str]) -> int:
    index: int = json.loads(body)["results"][0]["predictions"][0]["index"]
    return index


def top1_of_v2_classification(body: bytes, headers: dict[str, str]) -> int:
    """An Open Inference Protocol v2 answer whose output is Triton's classification (``"score:index"``
    strings), in binary after the JSON header (``Inference-Header-Content-Length``) or in the JSON."""
    length = int(headers.get(wire.INFERENCE_HEADER.lower(), len(body)))
    output = json.loads(body[:length])["outputs"][0]
    if length < len(body):
        size = int.from_bytes(body[length : length + 4], "little")
        first = body[length + 4 : length + 4 + size].decode()
    else:
        first = output["data"][0]
    return int(first.split(":")[1])


@dataclass(frozen=True)
class PeerRoute:
    """A route of a contender, the request its clients send, and how to read the top class from its answer."""

    route: Route
    top1: Callable[[bytes, dict[str, str]], int]

    def ask(self, port: int, timeout: float = 30.0) -> tuple[int, bytes, dict[str, str]]:
        """One request, as wrk sends it: (status, body, headers in lower case)."""
        headers = {}
        if self.route.content_type:
            headers["Content-Type"] = self.route.content_type
        if self.route.inference_header is not None:
            headers[wire.INFERENCE_HEADER] = str(self.route.inference_header)
        connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            connection.request("POST", self.route.path, body=self.route.body.read_bytes(), headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()


@dataclass
class Launch:
    """How to start one contender's server."""

    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int


class Contender:
    key: ClassVar[str]
    name: ClassVar[str]  # the product, for the table
    distribution: ClassVar[str] = ""  # its PyPI name, for its version
    ready_path: ClassVar[str]
    is_ours: ClassVar[bool] = False

    @property
    def venv(self) -> Path:
        return VENVS / self.key

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def check(self) -> None:
        """Raise :class:`Skip` when this machine cannot run the contender."""

    @property
    def configuration(self) -> str:
        raise NotImplementedError

    def routes(self, jpeg: bytes, workdir: Path) -> list[PeerRoute]:
        raise NotImplementedError

    def prepare(self, workdir: Path, model_dir: Path) -> None:
        """Work done once per benchmark run, before the first start (not part of a cold start)."""

    def launch(self, workdir: Path, model_dir: Path, cache_dir: Path) -> Launch:
        raise NotImplementedError

    def peer_env(self, model_dir: Path, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "BENCH_MODEL_DIR": str(model_dir),
            "BENCH_PREPROCESS": str(PREPROCESS),
            "PYTHONPATH": str(ROOT),  # bench.peers.services._model (bench/ and bench/peers/ import nothing)
            "PYTHONDONTWRITEBYTECODE": "1",
            "ORT_DISABLE_TELEMETRY": "1",
        }
        env.update(extra)
        return env

    def version(self) -> str:
        if not self.distribution:
            return ""
        found = subprocess.run(
            [str(self.python), "-c", f"from importlib.metadata import version; print(version({self.distribution!r}))"],
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip()


def _file(workdir: Path, name: str, data: bytes) -> Path:
    path = workdir / name
    path.write_bytes(data)
    return path


class Ours(Contender):
    ready_path = "/ready"
    is_ours = True

    def __init__(self, key: str, env: dict[str, str], title: str) -> None:
        self.key = key  # type: ignore[misc]
        self.name = f"this project, {title}"  # type: ignore[misc]
        self.config = ServerConfig(key, title, env)

    @property
    def python(self) -> Path:
        return Path(sys.executable)

    @property
    def configuration(self) -> str:
        fields = Settings.model_fields
        return (
            f"`python -m backend` with {' '.join(f'`{k}={v}`' for k, v in self.config.env.items()) or 'no setting'}"
            ": uvicorn, one process; decoding in worker processes, "
            "the batcher running one single-threaded pass per CPU side by side, "
            f"`MAX_BATCH_SIZE={fields['max_batch_size'].default}`, "
            f"`MAX_BATCH_DELAY_MS={fields['max_batch_delay_ms'].default:g}`; `ACCESS_LOG=false`"
        )

    def routes(self, jpeg: bytes, workdir: Path) -> list[PeerRoute]:
        body = _file(workdir, "body-raw.jpg", jpeg)
        return [
            PeerRoute(
                Route("raw", "`POST /predict`, the JPEG as the raw body", "/predict", body, "image/jpeg"), top1_of_ours
            )
        ]

    def launch(self, workdir: Path, model_dir: Path, cache_dir: Path) -> Launch:
        port = free_port()
        return Launch([sys.executable, "-m", "backend"], server_env(self.config, port, cache_dir), workdir, port)


def ours() -> list[Ours]:
    """Our server in its default configuration and, when the default runtime is not ONNX Runtime, with
    ``RUNTIME=onnx``: the line like for like with the peers."""
    default = str(Settings.model_fields["runtime"].default)
    found = [Ours("ours", {}, f"defaults (RUNTIME={default})")]
    if default != "onnx":
        found.append(Ours("ours-onnx", {"RUNTIME": "onnx"}, "RUNTIME=onnx"))
    return found


class LitServe(Contender):
    key = "litserve"
    name = "LitServe"
    distribution = "litserve"
    ready_path = "/health"

    @property
    def configuration(self) -> str:
        return (
            f'`LitServer(accelerator="cpu", workers_per_device={WORKERS}, fast_queue=True)`: one API server '
            f"process (uvicorn) and {WORKERS} inference worker processes; `LitAPI(max_batch_size={MAX_BATCH_SIZE}, "
            f"batch_timeout={BATCH_WAIT_MS / 1000})`; decode and preprocessing in `decode_request` (in the workers)"
        )

    def routes(self, jpeg: bytes, workdir: Path) -> list[PeerRoute]:
        body = _file(workdir, "body-litserve.json", json.dumps({"image": base64.b64encode(jpeg).decode()}).encode())
        route = Route(
            "json-base64", '`POST /predict`, JSON `{"image": base64 of the JPEG}`', "/predict", body, "application/json"
        )
        return [PeerRoute(route, top1_of_predictions)]

    def launch(self, workdir: Path, model_dir: Path, cache_dir: Path) -> Launch:
        port = free_port()
        env = self.peer_env(
            model_dir,
            BENCH_PORT=str(port),
            BENCH_WORKERS=str(WORKERS),
            BENCH_MAX_BATCH_SIZE=str(MAX_BATCH_SIZE),
            BENCH_BATCH_TIMEOUT=str(BATCH_WAIT_MS / 1000),
        )
        return Launch([str(self.python), str(SERVICES / "litserve_service.py")], env, workdir, port)


class BentoML(Contender):
    key = "bentoml"
    name = "BentoML"
    distribution = "bentoml"
    ready_path = "/readyz"

    @property
    def configuration(self) -> str:
        return (
            f"`@bentoml.service(workers={WORKERS})`, {WORKERS} worker processes behind BentoML's HTTP server; "
            "`/classify`: the raw body as the API's root input (`image: PIL.Image.Image, /`), one image a call; "
            f"`/classify_batch`: adaptive batching, `@bentoml.api(batchable=True, max_batch_size={MAX_BATCH_SIZE}, "
            'max_latency_ms=30000)` (as the request timeout: with 1000, BentoML answered 503 "process is overloaded" '
            "to 10-30% of the 16-client requests on a busy machine, where the others queue), the JPEG as a multipart "
            "file; access log off"
        )

    def routes(self, jpeg: bytes, workdir: Path) -> list[PeerRoute]:
        raw = _file(workdir, "body-raw.jpg", jpeg)
        multipart = _file(
            workdir,
            "body-bentoml-multipart.bin",
            (
                f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="cat.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + jpeg
            + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode(),
        )
        return [
            PeerRoute(
                Route("raw", "`POST /classify`, the JPEG as the raw body", "/classify", raw, "image/jpeg"),
                top1_of_predictions,
            ),
            PeerRoute(
                Route(
                    "batch-multipart",
                    "`POST /classify_batch` (adaptive batching), the JPEG as a multipart file",
                    "/classify_batch",
                    multipart,
                    f"multipart/form-data; boundary={MULTIPART_BOUNDARY}",
                ),
                top1_of_predictions,
            ),
        ]

    def launch(self, workdir: Path, model_dir: Path, cache_dir: Path) -> Launch:
        port = free_port()
        home = workdir / "bentoml-home"
        home.mkdir(exist_ok=True)
        env = self.peer_env(
            model_dir,
            BENTOML_HOME=str(home),
            BENTOML_DO_NOT_TRACK="true",
            BENCH_WORKERS=str(WORKERS),
            BENCH_MAX_BATCH_SIZE=str(MAX_BATCH_SIZE),
        )
        command = [
            str(self.venv / "bin" / "bentoml"),
            "serve",
            "bentoml_service:Classifier",
            "--working-dir",
            str(SERVICES),
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        return Launch(command, env, workdir, port)


class TorchServe(Contender):
    key = "torchserve"
    name = "TorchServe"
    distribution = "torchserve"
    ready_path = "/ping"

    def check(self) -> None:
        if shutil.which("java") is None:
            raise Skip("TorchServe's frontend needs Java 11 or later: apt-get install -y openjdk-17-jre-headless")

    @property
    def configuration(self) -> str:
        return (
            f"model-config.yaml: `minWorkers: {WORKERS}`, `maxWorkers: {WORKERS}`, `batchSize: {MAX_BATCH_SIZE}`, "
            f"`maxBatchDelay: {BATCH_WAIT_MS}` (ms); a custom handler module (`handle(data, context)`); the Java "
            "frontend's defaults otherwise (Netty threads one per CPU), token authorisation and system metrics off"
        )

    def routes(self, jpeg: bytes, workdir: Path) -> list[PeerRoute]:
        raw = _file(workdir, "body-raw.jpg", jpeg)
        route = Route("raw", "`POST /predictions/classifier`, the JPEG as the raw body", "/predictions/classifier", raw)
        return [PeerRoute(route, top1_of_predictions)]

    def prepare(self, workdir: Path, model_dir: Path) -> None:
        """The model archive (unpacked: ``--archive-format no-archive``), as torch-model-archiver makes it."""
        home = workdir / "torchserve"
        store = home / "store"
        shutil.rmtree(home, ignore_errors=True)
        store.mkdir(parents=True)
        config = home / "model-config.yaml"
        config.write_text(
            f"minWorkers: {WORKERS}\nmaxWorkers: {WORKERS}\nbatchSize: {MAX_BATCH_SIZE}\n"
            f"maxBatchDelay: {BATCH_WAIT_MS}\nresponseTimeout: 30\n",
            encoding="utf-8",
        )
        subprocess.run(
            [
                str(self.venv / "bin" / "torch-model-archiver"),
                "--model-name=classifier",
                "--version=1.0",
                f"--handler={SERVICES / 'torchserve_handler.py'}",
                f"--config-file={config}",
                "--archive-format=no-archive",
                f"--export-path={store}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def launch(self, workdir: Path, model_dir: Path, cache_dir: Path) -> Launch:
        home = workdir / "torchserve"
        port, management, metrics = free_port(), free_port(), free_port()
        properties = home / "config.properties"
        properties.write_text(
            f"inference_address=http://{HOST}:{port}\nmanagement_address=http://{HOST}:{management}\n"
            f"metrics_address=http://{HOST}:{metrics}\ndisable_system_metrics=true\n"
            "disable_token_authorization=true\n",
            encoding="utf-8",
        )
        env = self.peer_env(model_dir, PATH=os.pathsep.join([str(self.venv / "bin"), os.environ.get("PATH", "")]))
        command = [
            str(self.venv / "bin" / "torchserve"),
            "--foreground",
            "--ncs",
            "--disable-token-auth",
            f"--model-store={home / 'store'}",
            "--models=classifier=classifier",
            f"--ts-config={properties}",
        ]
        return Launch(command, env, home, port)


def _libpython() -> Path:
    """The shared libpython of the interpreter the venvs are made from: Triton's Python backend stub loads
    it, and must not find another Python's (Debian's 3.11.2 under pyenv's 3.11.7 fails in multiprocessing)."""
    return Path(str(sysconfig.get_config_var("LIBDIR")))


class PyTriton(Contender):
    key = "pytriton"
    name = "PyTriton (Triton)"
    distribution = "nvidia-pytriton"
    ready_path = "/v2/models/classifier/ready"

    def check(self) -> None:
        library = _libpython() / str(sysconfig.get_config_var("LDLIBRARY"))
        if sys.platform != "linux" or not library.exists():
            raise Skip(f"PyTriton needs Linux and a shared libpython ({library} is missing)")

    @property
    def configuration(self) -> str:
        return (
            f"`ModelConfig(max_batch_size={MAX_BATCH_SIZE}, batcher=DynamicBatcher(max_queue_delay_microseconds=0))` "
            f"(Triton's dynamic batcher, its default delay), {WORKERS} model instances (`bind(infer_func=[f1, f2])`, "
            "one session each) in PyTriton's proxy process; Triton's HTTP front end (C++); numpy 1.26 (PyTriton "
            "requires numpy < 2)"
        )

    def routes(self, jpeg: bytes, workdir: Path) -> list[PeerRoute]:
        data = wire.bytes_elements([jpeg])
        request = {
            "inputs": [
                {"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(data)}}
            ],
            "outputs": [{"name": "PROBABILITIES", "parameters": {"binary_data": True, "classification": 5}}],
        }
        header = json.dumps(request).encode()
        body = _file(workdir, "body-pytriton-v2.bin", header + data)
        route = Route(
            "v2-binary",
            "`POST /v2/models/classifier/infer`, v2 binary as tritonclient sends it (top 5 as classification)",
            "/v2/models/classifier/infer",
            body,
            inference_header=len(header),
        )
        return [PeerRoute(route, top1_of_v2_classification)]

    def launch(self, workdir: Path, model_dir: Path, cache_dir: Path) -> Launch:
        port = free_port()
        workspace = workdir / f"pytriton-{port}"
        env = self.peer_env(
            model_dir,
            LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(_libpython()), os.environ.get("LD_LIBRARY_PATH", "")])),
            BENCH_WORKSPACE=str(workspace),
            BENCH_PORT=str(port),
            BENCH_GRPC_PORT=str(free_port()),
            BENCH_METRICS_PORT=str(free_port()),
            BENCH_MAX_BATCH_SIZE=str(MAX_BATCH_SIZE),
            BENCH_MAX_QUEUE_DELAY_US="0",
            BENCH_INSTANCES=str(WORKERS),
        )
        return Launch([str(self.python), str(SERVICES / "pytriton_service.py")], env, workdir, port)


PEERS: dict[str, type[Contender]] = {c.key: c for c in (LitServe, BentoML, TorchServe, PyTriton)}
