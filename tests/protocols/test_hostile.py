"""Hostile requests to the protocols' routes: their designed 4xx in the protocol's own error body, never a 500.

The cases are generated with the rest of the hostile corpus (``tests.hostile.corpus.build_protocol_corpus``,
``python -m tests.hostile.corpus OUT_DIR`` writes them out). Those the codec alone decides are also
replayed against ``parse_infer_request`` without a server (fast; ``make check`` runs them).
"""

from __future__ import annotations

import json

import httpx
import pytest

from backend.protocols.v2 import InferenceRequestError, ModelFacts, header_length, parse_infer_request
from tests.helpers import CAT_CLASSES
from tests.hostile.corpus import V2_INFER, Case, build_protocol_corpus

CASES = build_protocol_corpus()
FACTS = ModelFacts(
    name="efficientnet_lite0",
    platform="onnxruntime_onnx",
    num_classes=1000,
    crop_size=224,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    max_images=16,
    max_image_bytes=20 * 1024 * 1024,
)
# Refused by the route, not the codec: the body's size, its encoding, the model, or the decoders.
ROUTE_DECIDES = {400: {"v2_truncated_image"}}


def _codec_cases() -> list[Case]:
    return [
        c
        for c in CASES
        if c.route == V2_INFER
        and c.statuses == {400}
        and c.name not in ROUTE_DECIDES[400]
        and "Content-Encoding" not in c.headers
    ]


@pytest.mark.parametrize("case", _codec_cases(), ids=lambda c: c.name)
def test_the_codec_refuses_each_malformed_request_with_its_own_error(case: Case) -> None:
    def parse() -> None:
        length = header_length(case.headers.get("Inference-Header-Content-Length"), len(case.body))
        parse_infer_request(bytearray(case.body), length, FACTS)

    with pytest.raises(InferenceRequestError) as refused:
        parse()
    assert refused.value.message  # a sentence for the client, not an exception's repr


@pytest.mark.parametrize("case", [c for c in CASES if c.route == V2_INFER and c.label], ids=lambda c: c.name)
def test_the_codec_takes_each_well_formed_request(case: Case) -> None:
    length = header_length(case.headers.get("Inference-Header-Content-Length"), len(case.body))
    parsed = parse_infer_request(bytearray(case.body), length, FACTS)
    assert len(parsed.images) == 1
    assert bytes(parsed.images[0][:2]) == b"\xff\xd8"  # the JPEG, decoded from whichever encoding


def _problems(case: Case, response: httpx.Response) -> list[str]:
    if response.status_code not in case.statuses:
        return [f"status {response.status_code}, expected {sorted(case.statuses)}: {response.text[:300]}"]
    if "Traceback" in response.text:
        return ["the answer leaks a traceback"]
    if response.status_code == 200:
        if case.route.startswith("/v2/"):
            (output,) = response.json()["outputs"]
            label = output["data"][0].split(":", 2)[2] if output["datatype"] == "BYTES" else None
            if label is None:
                index = max(range(len(output["data"])), key=output["data"].__getitem__)
                label = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}.get(index, str(index))
        else:
            label = next(iter(response.json()))
        return [] if label in CAT_CLASSES else [f"top-1 {label!r} is not a cat"]
    body = response.json()
    if case.route.startswith("/v2/"):
        ok = set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
        return [] if ok else [f"not the v2 error body: {body!r}"]
    ok = set(body) == {"code", "type", "message"} and body["code"] == response.status_code and body["message"]
    return [] if ok else [f"not TorchServe's error body: {body!r}"]


@pytest.mark.slow
def test_every_protocol_case_gets_its_designed_answer_from_the_real_server(live_backend: str) -> None:
    problems: dict[str, list[str]] = {}
    with httpx.Client(base_url=live_backend, timeout=60) as client:
        for case in CASES:
            response = client.post(case.path, content=case.body, headers=case.headers)
            if found := _problems(case, response):
                problems[case.name] = found
        assert client.get("/ready").status_code == 200  # still serving
    assert not problems, json.dumps(problems, indent=1)
