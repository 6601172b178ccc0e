"""Image classification without a web framework: decode untrusted bytes, preprocess, run a model.

Public surface::

    from backend.classifier import ModelSpec, load_classifier, ImageLimits
    clf = load_classifier(ModelSpec(), runtime="openvino", cache_dir=Path("~/.cache/x").expanduser())
    clf.classify([open("cat.jpg", "rb").read()], top_k=3)
    clf.version  # the content hash of the exported model (a bundle: ``export_bundle``, ``model_dir=``)

torch is only imported to build or export a model, never to serve an exported one. A server decodes
untrusted images with ``DecoderPool`` (worker processes, each image within a CPU and memory budget).
"""

from ._allocator import return_free_memory
from ._classifier import Classifier, Prediction, PreparedImage, load_classifier
from ._errors import (
    ClassifierError,
    DecodeTimeout,
    ImageError,
    ImageTooLarge,
    InvalidImage,
    ModelConfigError,
    UnsupportedImage,
)
from ._export import BundleError, export_bundle, read_bundle
from ._images import SUPPORTED_FORMATS, ImageLimits
from ._model import EMBEDDED_MODEL, ModelInfo, ModelSpec
from ._pool import Buffer, DecoderBusy, DecoderClosed, DecoderPool, DecoderSettings
from ._preprocess import Preprocessing
from ._runtimes import Precision, RuntimeName, default_threads

__all__ = [
    "EMBEDDED_MODEL",
    "SUPPORTED_FORMATS",
    "Buffer",
    "BundleError",
    "Classifier",
    "ClassifierError",
    "DecodeTimeout",
    "DecoderBusy",
    "DecoderClosed",
    "DecoderPool",
    "DecoderSettings",
    "ImageError",
    "ImageLimits",
    "ImageTooLarge",
    "InvalidImage",
    "ModelConfigError",
    "ModelInfo",
    "ModelSpec",
    "Precision",
    "Prediction",
    "PreparedImage",
    "Preprocessing",
    "RuntimeName",
    "UnsupportedImage",
    "default_threads",
    "export_bundle",
    "load_classifier",
    "read_bundle",
    "return_free_memory",
]
