"""Model bundles: a model exported into a folder of its own (``python -m backend.prefetch --export-to``) and served
from there (``MODEL_DIR``) with its labels and its version, a content hash; a bundle that is not whole, or not of
one model, fails readiness with a message naming the file and what to do, and /predict answers 503, never 500."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from backend.batch import Task
from backend.classifier import Classifier, ModelConfigError, ModelSpec, export_bundle, load_classifier
from backend.classifier._export import BUNDLE_FILE, INFO_FILE, ONNX_FILE, _bundle_json
from backend.config import Settings
from backend.service import default_factory
from tests.helpers import CAT, ROOT, jpeg_bytes

LABELS = ("healthy", "rust", "scab")
TOP = "rust"  # the fake checkpoint's classifier bias makes it the top class of every image
ARCHITECTURE = "mobilenet_v3_small"  # the smallest torchvision classifier: a 6 MB export


def sha256sum_version(folder: Path) -> str:
    """What README says a shell computes: ``sha256sum model.onnx model.json | sha256sum | cut -c1-16``."""
    listing = "".join(
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n" for name in (ONNX_FILE, INFO_FILE)
    )
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def fake_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A fake fine-tuned 3-class checkpoint (random weights, a bias that ranks the classes) and its labels file."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(ARCHITECTURE, weights=None, num_classes=len(LABELS))
    state = model.state_dict()
    last = max(key for key in state if key.startswith("classifier.") and key.endswith(".bias"))
    state[last] = torch.tensor([0.0, 4.0, 1.0])  # rust, then scab, then healthy, whatever the image
    torch.save(state, folder / "leaves.pt")
    (folder / "leaves.txt").write_text("\n".join(LABELS) + "\n")
    return folder / "leaves.pt", folder / "leaves.txt"


def fake_bundle(folder: Path, work: Path) -> str:
    """Export the fake checkpoint (made in ``work``) as a bundle into ``folder``; its version."""
    weights, labels = fake_checkpoint(work)
    return export_bundle(ModelSpec(ARCHITECTURE, checkpoint=weights, labels=labels), folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fake_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def bundle(checkpoint: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The bundle exported from the checkpoint, and its version (never served from here: tests copy it)."""
    weights, labels = checkpoint
    folder = tmp_path_factory.mktemp("bundles") / "leaves" / "v3"
    version = export_bundle(ModelSpec(ARCHITECTURE, checkpoint=weights, labels=labels), folder)
    return folder, version


@pytest.fixture
def served(bundle: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the bundle in a folder of its own, as a bucket would hold it."""
    copy = tmp_path / "models" / "leaves" / "v3"
    shutil.copytree(bundle[0], copy)
    return copy


def test_the_export_is_exactly_the_bundle_and_its_version_is_its_content(bundle: tuple[Path, str]) -> None:
    folder, version = bundle
    assert sorted(p.name for p in folder.iterdir()) == [BUNDLE_FILE, INFO_FILE, ONNX_FILE]
    assert version == sha256sum_version(folder)
    assert len(version) == 16
    described = json.loads((folder / BUNDLE_FILE).read_text())
    assert described["version"] == version
    assert (described["model"], described["classes"]) == (ARCHITECTURE, 3)
    for name in (ONNX_FILE, INFO_FILE):
        assert described["files"][name] == {
            "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
            "bytes": (folder / name).stat().st_size,
        }
    info = json.loads((folder / INFO_FILE).read_text())
    assert (info["name"], info["source"], tuple(info["labels"])) == (ARCHITECTURE, "checkpoint", LABELS)
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o444 == 0o444, path  # readable by whichever user serves it


def test_another_model_has_another_version(bundle: tuple[Path, str], served: Path) -> None:
    info = json.loads((served / INFO_FILE).read_text())
    info["labels"] = ["healthy", "rust", "mildew"]
    (served / INFO_FILE).write_text(json.dumps(info))
    (served / BUNDLE_FILE).write_text(_bundle_json(served))
    classifier = load_classifier(ModelSpec(), runtime="onnx", cache_dir=Path("/nonexistent"), model_dir=served)
    assert classifier.version == sha256sum_version(served) != bundle[1]


def test_a_bundle_is_never_exported_over_another(bundle: tuple[Path, str], checkpoint: tuple[Path, Path]) -> None:
    folder, version = bundle
    weights, labels = checkpoint
    with pytest.raises(ModelConfigError, match="export each version into a new folder"):
        export_bundle(ModelSpec(ARCHITECTURE, checkpoint=weights, labels=labels), folder)
    assert sha256sum_version(folder) == version


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_the_service_serves_a_bundle_with_its_labels_and_version(
    make_client: Callable[..., TestClient], bundle: tuple[Path, str], served: Path, runtime: str
) -> None:
    version = bundle[1]
    client = make_client(default_factory, model_dir=served, runtime=runtime)
    model = client.get("/model").json()
    assert (model["name"], model["version"], model["source"]) == (ARCHITECTURE, version, "checkpoint")
    assert (model["runtime"], model["num_classes"]) == (runtime, 3)

    response = client.post("/predict?top_k=3", files={"file": ("leaf.jpg", jpeg_bytes(CAT), "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["model_version"]) == (ARCHITECTURE, version)
    predictions = body["results"][0]["predictions"]
    assert [p["label"] for p in predictions] == [TOP, "scab", "healthy"]
    assert [p["index"] for p in predictions] == [1, 2, 0]

    metrics = client.get("/metrics").text
    (line,) = [line for line in metrics.splitlines() if line.startswith("model_info{")]
    assert f'name="{ARCHITECTURE}"' in line
    assert f'version="{version}"' in line
    assert f'runtime="{runtime}"' in line
    assert line.endswith(" 1.0")


def test_the_embedded_model_is_versioned_by_its_export_too(classifier: Classifier, model_cache: Path) -> None:
    (export,) = [p for p in model_cache.iterdir() if p.name.startswith("efficientnet_lite0-embedded")]
    assert classifier.version == sha256sum_version(export)


def _truncate(folder: Path) -> None:
    data = (folder / ONNX_FILE).read_bytes()
    (folder / ONNX_FILE).write_bytes(data[: len(data) // 2])  # a copy that stopped half-way


def _more_labels(folder: Path) -> None:
    """model.json of another model (4 classes), bundle.json remade to match: the files agree, the model not."""
    info = json.loads((folder / INFO_FILE).read_text())
    info["labels"] = [*LABELS, "blight"]
    (folder / INFO_FILE).write_text(json.dumps(info))
    (folder / BUNDLE_FILE).write_text(_bundle_json(folder))


def _not_onnx(folder: Path) -> None:
    """model.onnx that no runtime can read, bundle.json remade to match it."""
    (folder / ONNX_FILE).write_bytes(b"this is not an ONNX model" * 100)
    (folder / BUNDLE_FILE).write_text(_bundle_json(folder))


def _bad_bundle_json(folder: Path) -> None:
    (folder / BUNDLE_FILE).write_text("{ not json")


def _bad_model_json(folder: Path) -> None:
    (folder / INFO_FILE).write_text('{"name": "leaves"}')
    (folder / BUNDLE_FILE).write_text(_bundle_json_of_files(folder))


def _bundle_json_of_files(folder: Path) -> str:
    """bundle.json matching the files even where model.json is no model description (``_bundle_json`` reads it)."""
    from backend.classifier._export import version_of

    digests = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in (ONNX_FILE, INFO_FILE)}
    files = {name: {"sha256": digest, "bytes": (folder / name).stat().st_size} for name, digest in digests.items()}
    return json.dumps({"format": 1, "version": version_of(digests), "files": files})


def _wrong_version(folder: Path) -> None:
    described = json.loads((folder / BUNDLE_FILE).read_text())
    described["version"] = "0123456789abcdef"
    (folder / BUNDLE_FILE).write_text(json.dumps(described))


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "no model.onnx": (lambda f: (f / ONNX_FILE).unlink(), "model.onnx is missing from the bundle in MODEL_DIR"),
    "no bundle.json": (lambda f: (f / BUNDLE_FILE).unlink(), "bundle.json is missing from the bundle in MODEL_DIR"),
    "model.onnx cut short": (_truncate, "model.onnx in MODEL_DIR does not match bundle.json"),
    "bundle.json not JSON": (_bad_bundle_json, "bundle.json in MODEL_DIR is not a bundle description"),
    "model.json not a model": (_bad_model_json, "model.json in MODEL_DIR is not a model description"),
    "version not the files'": (_wrong_version, "bundle.json in MODEL_DIR states version '0123456789abcdef'"),
    "labels of another model": (_more_labels, "model.onnx in MODEL_DIR answers 3 probabilities per image, but "),
    "model.onnx unreadable": (_not_onnx, "model.onnx in MODEL_DIR cannot be loaded by"),
}


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_bundle_fails_readiness_saying_which_file_and_what_to_do(
    make_client: Callable[..., TestClient], served: Path, broken: str, runtime: str
) -> None:
    damage, expected = BROKEN[broken]
    damage(served)
    client = make_client(default_factory, wait=False, model_dir=served, runtime=runtime)
    ready = _settled(client)
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "failed"
    assert expected in body["detail"], body
    assert "python -m backend.prefetch --export-to" in body["detail"]
    assert str(served) not in body["detail"]  # /ready is open to all: the path is in the log only

    response = client.post("/predict", content=jpeg_bytes(CAT), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["code"] == "model_failed"
    assert expected in answer["detail"]
    assert client.get("/model").status_code == 503


def _settled(client: TestClient, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while (response := client.get("/ready")).json()["status"] == "loading":
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.02)
    return response


def test_a_missing_model_dir_says_to_mount_it(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(default_factory, wait=False, model_dir=tmp_path / "not-mounted")
    body = _settled(client).json()
    assert body["status"] == "failed"
    assert "MODEL_DIR is not a folder here" in body["detail"]
    assert "--add-volume type=cloud-storage" in body["detail"]


def test_a_bundle_is_read_with_neither_torch_nor_the_model_cache(served: Path) -> None:
    """In a fresh interpreter, as the serving image (which has no torch) runs it: MODEL_NAME and the cache unused."""
    probe = (
        "import sys; from pathlib import Path; from backend.classifier import ModelSpec, load_classifier; "
        f"c = load_classifier(ModelSpec('resnet50'), runtime='onnx', cache_dir=Path('/nonexistent'), "
        f"model_dir=Path({str(served)!r})); "
        "print(c.version, ','.join(c.info.labels), 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [sha256sum_version(served), ",".join(LABELS), "False"]


def test_model_dir_needs_a_runtime_that_runs_exports() -> None:
    with pytest.raises(ValidationError, match="set RUNTIME=openvino or onnx"):
        Settings(_env_file=None, model_dir=Path("/models/leaves/v3"), runtime="torch")
    with pytest.raises(ValidationError, match="unset PRECISION"):
        Settings(_env_file=None, model_dir=Path("/models/leaves/v3"), precision="int8")
    assert Settings(_env_file=None, model_dir="").model_dir is None  # an empty MODEL_DIR= is unset


def test_the_batch_job_records_the_bundles_version(bundle: tuple[Path, str], served: Path, tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "results"
    images.mkdir()
    (images / "leaf.jpg").write_bytes(jpeg_bytes(CAT))
    settings = Settings(_env_file=None, model_dir=served, runtime="onnx", decode_processes=1)
    summary = asyncio.run(Task(settings, images, output, fmt="jsonl").run())
    assert (summary.model, summary.model_version, summary.classified) == (ARCHITECTURE, bundle[1], 1)
    (row,) = [json.loads(line) for shard in output.glob("*.jsonl") for line in shard.read_text().splitlines()]
    assert (row["model_version"], row["labels"][0]) == (bundle[1], TOP)


@pytest.mark.slow  # exports a model in a fresh process
def test_prefetch_exports_the_configured_checkpoint_as_a_bundle(
    checkpoint: tuple[Path, Path], bundle: tuple[Path, str], tmp_path: Path
) -> None:
    weights, labels = checkpoint
    env = {**os.environ, "MODEL_NAME": ARCHITECTURE, "MODEL_CHECKPOINT": str(weights), "MODEL_LABELS": str(labels)}
    env.pop("MODEL_DIR", None)
    command = [sys.executable, "-m", "backend.prefetch", "--export-to", str(tmp_path / "v3")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(line) for line in done.stdout.splitlines() if "exported a bundle" in line]
    assert line["version"] == sha256sum_version(tmp_path / "v3") == bundle[1]  # the same checkpoint, the same bytes
    assert sorted(p.name for p in (tmp_path / "v3").iterdir()) == [BUNDLE_FILE, INFO_FILE, ONNX_FILE]

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 2
    assert "already exists" in again.stderr
