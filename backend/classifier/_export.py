"""Exporting a model once to ONNX, into a cache directory keyed by what was exported, or into a bundle.

The exported graph takes what preprocessing produces, ``uint8`` images ``(N, H, W, 3)``, and returns
class probabilities ``(N, classes)``: layout change, scaling, normalisation and softmax are inside it.
Next to ``model.onnx`` lies ``model.json`` (labels, preprocessing, provenance), so a service can run the
model with ONNX Runtime alone, without importing torch.

Those two files and ``bundle.json`` make a *bundle*: ``bundle.json`` holds each file's SHA-256 and the
model's version, a short hash of both files' contents (``sha256sum model.onnx model.json | sha256sum``,
its first 16 hex digits), so the same model always has the same version and any change gives another.
Every export is one (the cache's too); ``export_bundle`` writes one into a folder of its own, to be copied
to a bucket and served from there (``MODEL_DIR``), and ``read_bundle`` checks one before it is served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._errors import ModelConfigError
from ._model import ModelInfo, ModelSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Bump when the exported graph changes, so stale caches are not reused.
EXPORT_VERSION: Final = 1
OPSET: Final = 17
ONNX_FILE: Final = "model.onnx"
INFO_FILE: Final = "model.json"
BUNDLE_FILE: Final = "bundle.json"
BUNDLE_FORMAT: Final = 1
VERSIONED_FILES: Final = (ONNX_FILE, INFO_FILE)  # the version is the hash of these, in this order
VERSION_DIGITS: Final = 16
_EXPORT_AGAIN: Final = (
    "Export the bundle again (`python -m backend.prefetch --export-to DIR`) and copy the whole folder, "
    "then point MODEL_DIR at it."
)


class BundleError(ModelConfigError):
    """A model bundle that cannot be served: a file missing, unreadable or not matching ``bundle.json``.

    The message names the file within the bundle and what to do, and no absolute path: the service shows it
    on ``/ready`` (the log has the path)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def deployable(module: torch.nn.Module, info: ModelInfo) -> torch.nn.Module:
    """``module`` wrapped to take ``uint8`` NHWC images and return probabilities."""
    import torch

    class Deployable(torch.nn.Module):
        scale: torch.Tensor
        shift: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = module
            mean = torch.tensor(info.preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(info.preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer("scale", 1.0 / (255.0 * std))
            self.register_buffer("shift", mean / std)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.shift
            return torch.softmax(self.model(x), dim=1)

    return Deployable().eval()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def artifact_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the export of ``spec`` lives. Checkpoints are keyed by content, so a new file is re-exported."""
    if spec.source == "checkpoint":
        assert spec.checkpoint is not None
        assert spec.labels is not None
        key = f"{_slug(spec.name)}-ckpt-{_file_digest(spec.checkpoint, spec.labels)}"
    elif spec.source == "embedded":
        key = "efficientnet_lite0-embedded"
    else:
        key = f"{_slug(spec.name)}-{_slug(spec.weights)}"
    return cache_dir / f"{key}-onnx{EXPORT_VERSION}"


def export_onnx(module: torch.nn.Module, info: ModelInfo, directory: Path) -> None:
    """Write ``model.onnx`` and ``model.json`` for ``module`` into ``directory`` (which must exist)."""
    import torch

    wrapped = deployable(module, info)
    size = info.preprocessing.crop_size
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        # The TorchScript-based exporter announces its deprecation, and tracing notes that Python
        # ints derived from shapes become constants; both are expected: H and W are fixed by the crop.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            wrapped,
            (example,),
            str(directory / ONNX_FILE),
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    (directory / INFO_FILE).write_text(info.to_json(), encoding="utf-8")


def ensure_onnx(spec: ModelSpec, cache_dir: Path) -> Path:
    """The directory holding the ONNX export of ``spec``, exporting it first if the cache lacks it."""
    target = artifact_dir(spec, cache_dir)
    if (target / ONNX_FILE).is_file() and (target / INFO_FILE).is_file():
        if not (target / BUNDLE_FILE).is_file():  # exported before exports were bundles
            _replace_text(target / BUNDLE_FILE, _bundle_json(target))
        return target
    from ._sources import build_module

    started = time.perf_counter()
    module, info = build_module(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the export is read by whichever user serves it
    try:
        export_onnx(module, info, staging)
        (staging / BUNDLE_FILE).write_text(_bundle_json(staging), encoding="utf-8")
        try:
            os.replace(staging, target)  # atomic: readers see all of it or none
        except OSError:
            if not (target / ONNX_FILE).is_file():  # not a concurrent exporter winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "exported %s to ONNX",
        info.name,
        extra={"artifact": str(target), "seconds": round(time.perf_counter() - started, 2)},
    )
    return target


# --- bundles: the export, and its version


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def version_of(digests: dict[str, str]) -> str:
    """The version of a bundle whose files have these SHA-256s: the first digits of the SHA-256 of what
    ``sha256sum model.onnx model.json`` prints (so a shell can check it)."""
    listing = "".join(f"{digests[name]}  {name}\n" for name in VERSIONED_FILES)
    return hashlib.sha256(listing.encode()).hexdigest()[:VERSION_DIGITS]


def _bundle_json(directory: Path) -> str:
    digests = {name: file_sha256(directory / name) for name in VERSIONED_FILES}
    info = ModelInfo.from_json((directory / INFO_FILE).read_text(encoding="utf-8"))
    data = {
        "format": BUNDLE_FORMAT,
        "version": version_of(digests),
        "model": info.name,
        "classes": info.num_classes,
        "files": {name: {"sha256": digests[name], "bytes": (directory / name).stat().st_size} for name in digests},
    }
    return json.dumps(data, indent=1) + "\n"


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, renamed)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; whichever user serves the export reads it
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def recorded_version(directory: Path) -> str:
    """The version ``bundle.json`` states, not checked against the files (for exports this process made)."""
    return str(json.loads((directory / BUNDLE_FILE).read_text(encoding="utf-8"))["version"])


def read_bundle(directory: Path, where: str = "MODEL_DIR") -> tuple[ModelInfo, str]:
    """The model description and version of the bundle in ``directory``, after checking every file against
    ``bundle.json``. Raises ``BundleError`` saying which file is wrong and what to do (``where`` names the
    setting that points here in those messages)."""

    def fail(message: str) -> BundleError:
        return BundleError(f"{message} {_EXPORT_AGAIN}", directory)

    if not directory.is_dir():
        raise BundleError(
            f"{where} is not a folder here. Point it at a folder holding {ONNX_FILE}, {INFO_FILE} and "
            f"{BUNDLE_FILE} (on Cloud Run, mount the bucket: --add-volume type=cloud-storage).",
            directory,
        )
    for name in (*VERSIONED_FILES, BUNDLE_FILE):
        if not (directory / name).is_file():
            raise fail(f"{name} is missing from the bundle in {where}.")
    try:
        bundle = json.loads((directory / BUNDLE_FILE).read_text(encoding="utf-8"))
        if bundle.get("format") != BUNDLE_FORMAT:
            found = bundle.get("format")
            raise fail(f"{BUNDLE_FILE} in {where} is of format {found!r}; this server reads {BUNDLE_FORMAT}.")
        stated = str(bundle["version"])
        expected = {name: str(bundle["files"][name]["sha256"]) for name in VERSIONED_FILES}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail(f"{BUNDLE_FILE} in {where} is not a bundle description ({type(exc).__name__}).") from None
    try:
        digests = {name: file_sha256(directory / name) for name in VERSIONED_FILES}
    except OSError as exc:
        raise fail(f"A file of the bundle in {where} cannot be read ({exc.strerror or type(exc).__name__}).") from None
    for name in VERSIONED_FILES:
        if digests[name] != expected[name]:
            raise fail(
                f"{name} in {where} does not match {BUNDLE_FILE} (its SHA-256 is {digests[name][:12]}..., the "
                f"bundle says {expected[name][:12]}...): the copy is incomplete or the file was changed."
            )
    version = version_of(digests)
    if stated != version:
        raise fail(f"{BUNDLE_FILE} in {where} states version {stated[:40]!r}, but its files make {version!r}.")
    try:
        info = ModelInfo.from_json((directory / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail(f"{INFO_FILE} in {where} is not a model description ({type(exc).__name__}: {exc}).") from None
    if info.num_classes < 2:
        raise fail(f"{INFO_FILE} in {where} names {info.num_classes} classes; a classifier needs two or more.")
    return info, version


def export_bundle(spec: ModelSpec, directory: Path) -> str:
    """Export ``spec`` as a bundle into ``directory`` (which must not exist, or be empty); returns its version.

    Only the bundle's three files: OpenVINO's compiled-model cache depends on the CPU and is made where the
    bundle is served (or not at all where that folder is read-only)."""
    from ._sources import build_module

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ModelConfigError(
            f"{directory} already exists and is not an empty folder. A bundle's version is its content: export "
            "each version into a new folder (e.g. .../v4)."
        )
    module, info = build_module(spec)
    parent = directory.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=parent))
    staging.chmod(0o755)
    try:
        export_onnx(module, info, staging)
        for name in VERSIONED_FILES:
            (staging / name).chmod(0o644)
        (staging / BUNDLE_FILE).write_text(_bundle_json(staging), encoding="utf-8")
        (staging / BUNDLE_FILE).chmod(0o644)
        if directory.exists():
            directory.rmdir()  # empty, as checked: the rename puts the whole bundle in its place
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return recorded_version(directory)
