"""Calls the server with unmodified third-party clients: tritonclient[http] and KServe's Python SDK.

Run by the tests with the clients' own interpreter (a separate venv: their dependencies do not belong in
the project's), as ``python third_party_clients.py URL MODEL IMAGE... --pixels PIXELS.npy``; prints one JSON
object with what each client got back. Nothing here knows the server's internals: only the clients' APIs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np


def _top(strings: np.ndarray) -> list[list[str]]:
    """tritonclient's classification output: "score:index:label" strings, as bytes, shape [N, k]."""
    return [[s.decode() if isinstance(s, bytes) else str(s) for s in row] for row in strings]


def triton(url: str, model: str, images: list[bytes], pixels: np.ndarray) -> dict[str, Any]:
    import tritonclient.http as httpclient  # type: ignore[import-not-found]

    client = httpclient.InferenceServerClient(urlparse(url).netloc)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model),
        "version_metadata": client.get_model_metadata(model, model_version="1"),
        "server": client.get_server_metadata(),
    }
    encoded = np.array(images, dtype=np.object_)
    for binary in (True, False):
        image = httpclient.InferInput("IMAGE", [len(images)], "BYTES")
        if binary:
            image.set_data_from_numpy(encoded, binary_data=True)
        else:  # JSON BYTES elements must be UTF-8 text: images go base64-encoded
            image.set_data_from_numpy(np.array([base64.b64encode(i) for i in images], dtype=np.object_), False)
        top = httpclient.InferRequestedOutput("PROBABILITIES", binary_data=binary, class_count=3)
        result = client.infer(model, [image], outputs=[top])
        out[f"bytes_{'binary' if binary else 'json'}_top3"] = _top(result.as_numpy("PROBABILITIES"))
        full = client.infer(model, [image], outputs=[httpclient.InferRequestedOutput("PROBABILITIES", binary)])
        out[f"bytes_{'binary' if binary else 'json'}_probabilities"] = full.as_numpy("PROBABILITIES").tolist()
    for binary in (True, False):
        fp32 = httpclient.InferInput("PIXELS", list(pixels.shape), "FP32")
        fp32.set_data_from_numpy(pixels, binary_data=binary)
        result = client.infer(
            model, [fp32], outputs=[httpclient.InferRequestedOutput("PROBABILITIES", binary, class_count=3)]
        )
        out[f"fp32_{'binary' if binary else 'json'}_top3"] = _top(result.as_numpy("PROBABILITIES"))
    fp32 = httpclient.InferInput("PIXELS", list(pixels.shape), "FP32")
    fp32.set_data_from_numpy(pixels)
    out["fp32_probabilities"] = client.infer(model, [fp32]).as_numpy("PROBABILITIES").tolist()
    try:
        client.infer("no_such_model", [fp32])
    except Exception as exc:  # tritonclient's InferenceServerException: the server's {"error": ...} message
        out["unknown_model_error"] = {"type": type(exc).__name__, "message": str(exc), "status": exc.status()}  # type: ignore[attr-defined]
    client.close()
    return out


async def kserve(url: str, model: str, images: list[bytes]) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig  # type: ignore[import-not-found]

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    out: dict[str, Any] = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, model),
    }
    binary = InferInput("IMAGE", [len(images)], "BYTES")
    binary.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    as_json = InferInput("IMAGE", [len(images)], "BYTES", data=[base64.b64encode(i).decode() for i in images])
    for name, tensor in (("binary", binary), ("json", as_json)):
        request = InferRequest(model_name=model, infer_inputs=[tensor], request_id=f"kserve-{name}")
        response = await client.infer(url, request, model_name=model)
        (output,) = response.outputs
        out[f"{name}_probabilities"] = output.as_numpy().tolist()
        out[f"{name}_id"] = response.id
    try:
        await client.infer(url, InferRequest(model_name="nope", infer_inputs=[as_json]), model_name="nope")
    except Exception as exc:  # httpx.HTTPStatusError, its message built from the server's {"error": ...}
        out["unknown_model_error"] = str(exc)
    await client.close()
    return out


def main() -> None:
    url, model, *rest = sys.argv[1:]
    pixels = np.load(rest[rest.index("--pixels") + 1])
    images = [Path(p).read_bytes() for p in rest[: rest.index("--pixels")]]
    result = {"triton": triton(url, model, images, pixels), "kserve": asyncio.run(kserve(url, model, images))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
