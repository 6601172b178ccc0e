"""/predict writes its answer as JSON itself (no response model built per request): it must still be exactly the
documented ``PredictResponse``, and the OpenAPI schema must still say so."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.schemas import ClassScore, ImagePrediction, PredictResponse
from tests.helpers import CAT, COFFEE, jpeg_bytes


def _exactly(model: type[Any], data: dict[str, Any]) -> None:
    """``data`` has every field of ``model``, no other, each of its declared type (strict validation)."""
    assert set(data) == set(model.model_fields), (model.__name__, sorted(data))
    model.model_validate(data, strict=True)


@pytest.mark.parametrize("shape", ["raw", "multipart"])
def test_the_answer_is_exactly_a_predict_response(client: TestClient, shape: str) -> None:
    if shape == "raw":
        response = client.post("/predict?top_k=3", content=jpeg_bytes(COFFEE), headers={"Content-Type": "image/jpeg"})
    else:
        files = [
            ("file", ("cat.jpg", jpeg_bytes(CAT), "image/jpeg")),
            ("file", ("coffee.png", COFFEE.read_bytes(), "image/png")),
        ]
        response = client.post("/predict?top_k=3", files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    _exactly(PredictResponse, body)
    assert body["top_k"] == 3
    assert len(body["results"]) == (1 if shape == "raw" else 2)
    for result in body["results"]:
        _exactly(ImagePrediction, result)
        assert len(result["predictions"]) == 3
        for prediction in result["predictions"]:
            _exactly(ClassScore, prediction)
            assert isinstance(prediction["probability"], float)


def test_the_schema_still_documents_the_answer(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PredictResponse"}
    assert set(schema["components"]["schemas"]["PredictResponse"]["properties"]) == set(PredictResponse.model_fields)
