"""Standard inference protocols on top of the one inference path (``ModelService``): framework-free codecs.

- ``v2``: the Open Inference Protocol v2 (KServe v2, Triton's HTTP/REST protocol, MLServer), with Triton's
  binary tensor data and classification extensions;
- ``body``: reading a whole request body within the same limits and memory budget as ``/predict``.

The routes (``backend.routes.v2``, ``backend.routes.torchserve``) wire them to HTTP.
"""

from __future__ import annotations

from typing import Final, Literal

Protocol = Literal["native", "v2", "torchserve"]

_TORCHSERVE_PREFIXES: Final = ("/ping", "/predictions", "/models")


def protocol_of(route: str) -> Protocol:
    """Which API a route template belongs to (for ``/metrics`` and the error bodies each protocol's clients read)."""
    if route == "/v2" or route.startswith("/v2/"):
        return "v2"
    if any(route == prefix or route.startswith(prefix + "/") for prefix in _TORCHSERVE_PREFIXES):
        return "torchserve"
    return "native"
