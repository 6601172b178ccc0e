"""Request bodies in the standard protocols' wire formats, byte for byte as their own clients send them.

Shared by the benchmark (``python -m bench``) and the load test (``locustfile.py``), neither of which may
import ``tritonclient`` (it lives in the protocol tests' own venv, not the main one).

- Open Inference Protocol v2 with the binary tensor data extension, as ``tritonclient.http`` sends
  ``InferInput("IMAGE", [N], "BYTES")`` with ``set_data_from_numpy(..., binary_data=True)`` and
  ``InferRequestedOutput("PROBABILITIES", binary_data=..., class_count=k)``: a JSON header whose
  length goes in the ``Inference-Header-Content-Length`` header, then each element as a 4-byte
  little-endian length and its bytes; no ``Content-Type``.
- TorchServe: the image itself is the body (``curl -T kitten.jpg``, or ``--data-binary @kitten.jpg``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

V2_IMAGE_INPUT: Final = "IMAGE"
V2_OUTPUT: Final = "PROBABILITIES"
INFERENCE_HEADER: Final = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class V2Request:
    body: bytes
    header_length: int  # the JSON header's length: the Inference-Header-Content-Length header

    @property
    def headers(self) -> dict[str, str]:
        return {INFERENCE_HEADER: str(self.header_length)}


def bytes_elements(elements: Sequence[bytes]) -> bytes:
    """A BYTES tensor's binary data: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def v2_binary_request(images: Sequence[bytes], class_count: int, binary_output: bool) -> V2Request:
    """An infer request for encoded ``images`` (BYTES ``[N]`` in binary), asking for the top ``class_count``
    classes (Triton's classification extension), in binary or, with ``binary_output`` false, as JSON."""
    data = bytes_elements(images)
    request: dict[str, Any] = {
        "inputs": [
            {
                "name": V2_IMAGE_INPUT,
                "shape": [len(images)],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": V2_OUTPUT, "parameters": {"binary_data": binary_output, "classification": class_count}}],
    }
    header = json.dumps(request).encode()
    return V2Request(header + data, len(header))
