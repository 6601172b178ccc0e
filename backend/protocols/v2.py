"""The Open Inference Protocol v2 (KServe v2, Triton HTTP/REST, MLServer) for an image classifier.

The model, as ``GET /v2/models/{name}`` describes it to clients:

- input ``IMAGE``, ``BYTES`` ``[N]``: encoded images (JPEG, PNG, ...), decoded and preprocessed by the
  server exactly as ``/predict`` does. In JSON, each element is a base64 string (what KServe's and
  Triton's clients send for bytes that are not UTF-8; a ``data:image/...;base64,`` prefix is allowed); with
  the binary tensor data extension, each element is a 4-byte little-endian length and the bytes.
- input ``PIXELS``, ``FP32`` ``[N, 3, H, W]``: images the client preprocessed itself (resized, centre-cropped
  to the model's size, scaled to [0, 1] and normalised with the model's mean and std, channels first:
  what torchvision's ``weights.transforms()`` returns). The model's input is 8-bit, so these are quantised
  back to 8 bits (at most 0.5/255 per channel before normalisation; the classes do not change).
- output ``PROBABILITIES``, ``FP32`` ``[N, classes]``: softmax probabilities. Triton's classification
  extension (``parameters.classification: k`` on the requested output) returns instead ``BYTES``
  ``[N, k]`` strings ``"score:index:label"``, most probable first.

A request carries exactly one of the inputs. Outputs are JSON ``data``, or binary (after the JSON header,
whose length the ``Inference-Header-Content-Length`` header gives) when the output asks for
``binary_data`` or the request for ``binary_data_output``.

Framework-free: bytes in, ``InferRequest`` out; probabilities in, bytes out. Every way a request can be
malformed raises ``InferenceRequestError`` (400) or ``ModelNotFound`` (404), never anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

INFERENCE_HEADER: Final = "inference-header-content-length"
IMAGE: Final = "IMAGE"
PIXELS: Final = "PIXELS"
PROBABILITIES: Final = "PROBABILITIES"
MODEL_VERSION: Final = "1"
EXTENSIONS: Final = ("binary_tensor_data", "classification")
_DATA_URI: Final = re.compile(rb"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,")
_URLSAFE: Final = re.compile(rb"[A-Za-z0-9_-]*=*")


class InferenceRequestError(Exception):
    """The request does not follow the protocol, or does not fit the model (400)."""

    code = "invalid_inference_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(Exception):
    """The request names a model or version this server does not serve (404)."""

    code = "model_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ModelFacts:
    """What the protocol needs to know about the model being served."""

    name: str
    platform: str
    num_classes: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_images: int
    max_image_bytes: int


def check_model(facts: ModelFacts, name: str, version: str | None) -> None:
    if name != facts.name:
        raise ModelNotFound(f"Model {name[:100]!r} is not served here; this server serves {facts.name!r}.")
    if version is not None and version != MODEL_VERSION:
        raise ModelNotFound(
            f"Version {version[:40]!r} of model {facts.name!r} is not served here; the only version is "
            f"{MODEL_VERSION!r}."
        )


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "image-classifier", "version": version, "extensions": list(EXTENSIONS)}


def model_metadata(facts: ModelFacts) -> dict[str, Any]:
    size = facts.crop_size
    return {
        "name": facts.name,
        "versions": [MODEL_VERSION],
        "platform": facts.platform,
        "inputs": [
            {
                "name": IMAGE,
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {
                    "description": "encoded images (JPEG, PNG, WebP, GIF, BMP, TIFF); base64 strings in JSON, "
                    "length-prefixed bytes in binary; the server decodes and preprocesses them",
                },
            },
            {
                "name": PIXELS,
                "datatype": "FP32",
                "shape": [-1, 3, size, size],
                "parameters": {
                    "description": f"preprocessed images, channels first: resized, centre-cropped to {size}x{size}, "
                    f"scaled to [0, 1], normalised with mean {list(facts.mean)} and std {list(facts.std)}; "
                    "quantised to 8 bits",
                },
            },
        ],
        "outputs": [
            {
                "name": PROBABILITIES,
                "datatype": "FP32",
                "shape": [-1, facts.num_classes],
                "parameters": {
                    "description": "softmax probabilities; with parameters.classification = k, BYTES [N, k] "
                    "'score:index:label' strings, most probable first",
                },
            }
        ],
    }


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0  # k > 0: the top k as "score:index:label" strings


@dataclass
class InferRequest:
    id: str | None
    outputs: list[RequestedOutput]
    images: list[bytes | memoryview] = field(default_factory=list)  # IMAGE: the encoded images
    pixels: np.ndarray | None = None  # PIXELS: uint8 (N, H, W, 3), as the model takes them


def _reject_constant(name: str) -> float:
    raise InferenceRequestError(f"The JSON has {name}, which is not a number JSON allows.")


def _json_object(text: bytes | bytearray | memoryview, what: str) -> dict[str, Any]:
    try:
        # The C scanner raises RecursionError on deep nesting ([[[[...): refused like any other bad JSON.
        value = json.loads(bytes(text), parse_constant=_reject_constant)
    except InferenceRequestError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InferenceRequestError(f"The {what} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise InferenceRequestError(f"The {what} must be a JSON object.")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parameters(entry: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InferenceRequestError(f"The parameters of {what} must be a JSON object.")
    return parameters


def _flag(parameters: dict[str, Any], name: str, what: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InferenceRequestError(f"Parameter {name} of {what} must be true or false.")
    return value


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length`` (None: the whole body is JSON)."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise InferenceRequestError("Inference-Header-Content-Length must be a whole number of bytes.")
    length = int(value)
    if length > body_size:
        raise InferenceRequestError(
            f"Inference-Header-Content-Length is {length} bytes, but the body has only {body_size}."
        )
    return length


def parse_infer_request(body: bytearray | bytes, json_length: int | None, facts: ModelFacts) -> InferRequest:
    """The inference request in ``body`` (its first ``json_length`` bytes JSON, binary tensor data after)."""
    if not len(body):
        raise InferenceRequestError("The request body is empty; send an inference request (JSON).")
    if json_length is None:
        json_length = len(body)
    request = _json_object(bytes(body[:json_length]), "inference request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceRequestError("The request id must be a string.")
    binary_output = _flag(_parameters(request, "the request"), "binary_data_output", "the request")
    result = InferRequest(request_id, _requested_outputs(request.get("outputs"), binary_output, facts))
    tensor, shape, raw = _the_input(request, memoryview(body)[json_length:])
    if tensor["name"] == IMAGE:
        result.images = _images(tensor, shape, raw, facts)
    else:
        result.pixels = _pixels(tensor, shape, raw, facts)
    return result


def _the_input(request: dict[str, Any], binary: memoryview) -> tuple[dict[str, Any], list[int], memoryview | None]:
    """The request's one input, its shape, and its binary data (None: its data is JSON)."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceRequestError(f"The request has no inputs: send one, {IMAGE} (BYTES) or {PIXELS} (FP32).")
    if len(inputs) > 1:
        raise InferenceRequestError(f"Send one input, {IMAGE} or {PIXELS}, not {len(inputs)}.")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise InferenceRequestError("Each input must be a JSON object with name, shape, datatype and data.")
    name, shape = tensor.get("name"), tensor.get("shape")
    if not isinstance(name, str) or name not in (IMAGE, PIXELS):
        shown = name[:40] if isinstance(name, str) else name
        raise InferenceRequestError(f"Unknown input {shown!r}: the model's inputs are {IMAGE} and {PIXELS}.")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) and d >= 0 for d in shape):
        raise InferenceRequestError(f"The shape of {name} must be a list of whole numbers, 0 or more.")
    parameters = _parameters(tensor, name)
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not _is_int(size) or size < 0:
            raise InferenceRequestError(f"binary_data_size of {name} must be a whole number of bytes, 0 or more.")
        if size != len(binary):
            raise InferenceRequestError(
                f"binary_data_size of {name} is {size} bytes, but {len(binary)} bytes of binary data follow the JSON."
            )
        if "data" in tensor:
            raise InferenceRequestError(f"Input {name} has both binary data and JSON data; send one.")
        return tensor, shape, binary
    if len(binary):
        raise InferenceRequestError(
            f"{len(binary)} bytes follow the JSON header, but no input has parameters.binary_data_size."
        )
    if "data" not in tensor:
        raise InferenceRequestError(f"Input {name} has no data (JSON 'data' or binary_data_size).")
    return tensor, shape, None


def _images(
    tensor: dict[str, Any], shape: list[int], raw: memoryview | None, facts: ModelFacts
) -> list[bytes | memoryview]:
    datatype = tensor.get("datatype")
    if datatype != "BYTES":
        raise InferenceRequestError(f"Input {IMAGE} is BYTES (encoded images), not {str(datatype)[:20]}.")
    if len(shape) != 1 or not 1 <= shape[0] <= facts.max_images:
        raise InferenceRequestError(f"The shape of {IMAGE} must be [N] with N from 1 to {facts.max_images}.")
    images = _bytes_elements(raw) if raw is not None else _json_bytes(tensor["data"])
    if len(images) != shape[0]:
        raise InferenceRequestError(f"The shape of {IMAGE} says {shape[0]} images, but {len(images)} were sent.")
    for index, image in enumerate(images):
        if not len(image):
            raise InferenceRequestError(f"Image {index + 1} of {IMAGE} is empty (0 bytes).")
    return images


def _pixels(tensor: dict[str, Any], shape: list[int], raw: memoryview | None, facts: ModelFacts) -> np.ndarray:
    datatype = tensor.get("datatype")
    if datatype != "FP32":
        raise InferenceRequestError(f"Input {PIXELS} is FP32 (preprocessed images), not {str(datatype)[:20]}.")
    size = facts.crop_size
    if len(shape) != 4 or shape[1:] != [3, size, size] or not 1 <= shape[0] <= facts.max_images:
        raise InferenceRequestError(
            f"The shape of {PIXELS} must be [N, 3, {size}, {size}] with N from 1 to {facts.max_images}."
        )
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != 4 * count:
            raise InferenceRequestError(
                f"{PIXELS} of shape {shape} is {4 * count} bytes of FP32, but {len(raw)} bytes were sent."
            )
        values = np.frombuffer(raw, dtype="<f4").copy()  # a copy: no view of the body outlives the request
    else:
        values = _json_numbers(tensor["data"], count)
    return to_model_pixels(values.reshape(shape), facts.mean, facts.std)


def _requested_outputs(outputs: object, binary_output: bool, facts: ModelFacts) -> list[RequestedOutput]:
    if outputs is None:
        return [RequestedOutput(PROBABILITIES, binary_output)]
    if not isinstance(outputs, list) or not outputs:
        raise InferenceRequestError(f"outputs must be a list of requested outputs (the model has {PROBABILITIES}).")
    requested = []
    for entry in outputs:
        if not isinstance(entry, dict) or entry.get("name") != PROBABILITIES:
            shown = entry.get("name") if isinstance(entry, dict) else entry
            raise InferenceRequestError(f"Unknown output {str(shown)[:40]!r}: the model's output is {PROBABILITIES}.")
        parameters = _parameters(entry, PROBABILITIES)
        binary = _flag(parameters, "binary_data", PROBABILITIES) if "binary_data" in parameters else binary_output
        k = parameters.get("classification", 0)
        if not _is_int(k) or k < 0:
            raise InferenceRequestError("parameters.classification must be a whole number of classes, 0 or more.")
        requested.append(RequestedOutput(PROBABILITIES, binary, min(k, facts.num_classes)))
    return requested


def _bytes_elements(raw: memoryview) -> list[bytes | memoryview]:
    """BYTES tensor data in the binary format: each element a 4-byte little-endian length, then its bytes."""
    elements: list[bytes | memoryview] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InferenceRequestError("The binary BYTES data ends inside an element's 4-byte length.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InferenceRequestError(
                f"A BYTES element says it is {length} bytes, but only {len(raw) - offset} bytes of data are left."
            )
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _json_bytes(data: object) -> list[bytes | memoryview]:
    """BYTES tensor data in JSON: a list of base64 strings (flat, or nested as the shape)."""
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise InferenceRequestError(f"The data of {IMAGE} must be a list of base64 strings, one per image.")
    images: list[bytes | memoryview] = []
    for index, text in enumerate(data):
        encoded = _DATA_URI.sub(b"", text.encode("ascii", "replace"), count=1)  # non-ASCII: '?', not base64
        padded = encoded + b"=" * (-len(encoded.rstrip(b"=")) % 4 if not encoded.endswith(b"=") else 0)
        try:
            if _URLSAFE.fullmatch(encoded) and (b"-" in encoded or b"_" in encoded):
                images.append(base64.urlsafe_b64decode(padded))
            else:
                images.append(base64.b64decode(padded, validate=True))
        except (binascii.Error, ValueError):
            raise InferenceRequestError(
                f"Image {index + 1} of {IMAGE} is not base64. In JSON, send each image base64-encoded; "
                "or send raw bytes with the binary tensor data extension."
            ) from None
    return images


def _json_numbers(data: object, count: int) -> np.ndarray:
    """FP32 tensor data in JSON: numbers, flat or nested; exactly ``count`` of them."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):  # ragged nesting
        raise InferenceRequestError(f"The data of {PIXELS} must be numbers, flat or nested as the shape.") from None
    if array.dtype.kind not in "iuf":  # strings, booleans, objects (mixed types), nulls
        raise InferenceRequestError(f"The data of {PIXELS} must be numbers, flat or nested as the shape.")
    if array.size != count:
        raise InferenceRequestError(f"The shape of {PIXELS} says {count} numbers, but {array.size} were sent.")
    if array.size and not float(np.abs(array).max()) <= float(np.finfo(np.float32).max):
        raise InferenceRequestError(f"The data of {PIXELS} has numbers too large for FP32.")
    return array.astype(np.float32).reshape(-1)


def to_model_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised FP32 ``(N, 3, H, W)`` back to the ``uint8`` ``(N, H, W, 3)`` the model's graph takes."""
    if not np.isfinite(pixels).all():
        raise InferenceRequestError(f"The data of {PIXELS} has values that are not finite numbers.")
    scale = (np.asarray(std, dtype=np.float32) * 255.0).reshape(1, 3, 1, 1)
    shift = (np.asarray(mean, dtype=np.float32) * 255.0).reshape(1, 3, 1, 1)
    values = np.rint(pixels * scale + shift)
    np.clip(values, 0, 255, out=values)
    return np.ascontiguousarray(values.astype(np.uint8).transpose(0, 2, 3, 1))


TopK = Callable[[np.ndarray, int], Sequence[tuple[float, int, str]]]


def encode_response(
    facts: ModelFacts,
    request: InferRequest,
    probabilities: np.ndarray,
    top_k: TopK,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    n = probabilities.shape[0]
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for requested in request.outputs:
        if requested.classification:
            k = requested.classification
            strings = [
                f"{score:f}:{index}:{label}".encode() for row in probabilities for score, index, label in top_k(row, k)
            ]
            entry: dict[str, Any] = {"name": requested.name, "datatype": "BYTES", "shape": [n, k]}
            if requested.binary:
                data = b"".join(struct.pack("<I", len(s)) + s for s in strings)
            else:
                entry["data"] = [s.decode() for s in strings]
        else:
            entry = {"name": requested.name, "datatype": "FP32", "shape": [n, probabilities.shape[1]]}
            if requested.binary:
                data = probabilities.astype("<f4", copy=False).tobytes()
            else:
                entry["data"] = probabilities.astype(np.float32, copy=False).reshape(-1).tolist()
        if requested.binary:
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": facts.name, "model_version": MODEL_VERSION}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    header = json.dumps(body, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
