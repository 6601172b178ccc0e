"""The Open Inference Protocol v2 through unmodified third-party clients, against the real server process.

tritonclient[http] (binary and JSON BYTES images, FP32 preprocessed pixels, class_count=3) and KServe's
``InferenceRESTClient`` (protocol v2, ``InferRequest``, binary and JSON) run in their own venv
(``third_party_clients.py``); their answers must name the photos' classes and carry, number for number,
the probabilities ``/predict`` gives for the same photos (one inference path).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import CAT, CAT_CLASSES, COFFEE, COFFEE_CLASSES, jpeg_bytes
from tests.protocols.conftest import clients_python, predict_probabilities, preprocessed

pytestmark = pytest.mark.slow  # a real server, and the clients in processes of their own

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def answers(live_backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = clients_python()
    folder = tmp_path_factory.mktemp("clients")
    (folder / "cat.png").write_bytes(CAT.read_bytes())
    (folder / "coffee.jpg").write_bytes(jpeg_bytes(COFFEE))
    np.save(folder / "pixels.npy", np.stack([preprocessed(live_backend, CAT), preprocessed(live_backend, COFFEE)]))
    script = Path(__file__).with_name("third_party_clients.py")
    photos = [str(folder / "cat.png"), str(folder / "coffee.jpg")]
    run = subprocess.run(
        [str(python), str(script), live_backend, MODEL, *photos, "--pixels", str(folder / "pixels.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(run.stdout)
    result["expected"] = [
        predict_probabilities(live_backend, CAT.read_bytes()),
        predict_probabilities(live_backend, jpeg_bytes(COFFEE)),
    ]
    return result


def _parse_top(strings: list[str]) -> list[tuple[float, int, str]]:
    parsed = []
    for s in strings:
        score, index, label = s.split(":", 2)
        parsed.append((float(score), int(index), label))
    return parsed


def test_tritonclient_sees_a_live_ready_server_and_the_model_metadata(answers: dict[str, Any]) -> None:
    triton = answers["triton"]
    assert (triton["live"], triton["ready"], triton["model_ready"]) == (True, True, True)
    metadata = triton["metadata"]
    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1"]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in metadata["inputs"]} == {
        ("IMAGE", "BYTES", (-1,)),
        ("PIXELS", "FP32", (-1, 3, 224, 224)),
    }
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("PROBABILITIES", "FP32", [-1, 1000])
    ]
    assert triton["version_metadata"] == metadata
    assert set(triton["server"]["extensions"]) >= {"binary_tensor_data", "classification"}


@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_tritonclient_bytes_images_come_back_with_their_classes(answers: dict[str, Any], encoding: str) -> None:
    triton = answers["triton"]
    top3 = [_parse_top(row) for row in triton[f"bytes_{encoding}_top3"]]
    assert [len(row) for row in top3] == [3, 3]
    assert top3[0][0][2] in CAT_CLASSES
    assert top3[1][0][2] in COFFEE_CLASSES
    for row, expected in zip(top3, answers["expected"], strict=True):
        assert [index for _, index, _ in row] == list(np.argsort(-expected, kind="stable")[:3])
        for score, index, _ in row:
            assert score == pytest.approx(expected[index], abs=1e-6)  # "%f": six decimals
    probabilities = np.array(triton[f"bytes_{encoding}_probabilities"])
    assert probabilities.shape == (2, 1000)
    np.testing.assert_allclose(probabilities, np.stack(answers["expected"]), atol=1e-6)


@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_tritonclient_fp32_pixels_come_back_with_their_classes(answers: dict[str, Any], encoding: str) -> None:
    top3 = [_parse_top(row) for row in answers["triton"][f"fp32_{encoding}_top3"]]
    assert top3[0][0][2] in CAT_CLASSES
    assert top3[1][0][2] in COFFEE_CLASSES


def test_fp32_pixels_give_the_probabilities_of_the_same_photo_sent_encoded(answers: dict[str, Any]) -> None:
    # The client's crop is the server's (same preprocessing, a PNG decoded losslessly): quantising it back to
    # the model's 8 bits is exact, so the cat's probabilities match /predict's. The coffee was a JPEG
    # for /predict (a lossy re-encode): its classes match, not every decimal.
    pixels = np.array(answers["triton"]["fp32_probabilities"])
    np.testing.assert_allclose(pixels[0], answers["expected"][0], atol=1e-5)
    assert int(np.argmax(pixels[1])) == int(np.argmax(answers["expected"][1]))


def test_tritonclient_reads_the_error_of_an_unknown_model(answers: dict[str, Any]) -> None:
    error = answers["triton"]["unknown_model_error"]
    assert error["status"] == "404"
    assert "'no_such_model' is not served here" in error["message"]


def test_kserve_rest_client_v2_classifies_binary_and_json_requests(answers: dict[str, Any]) -> None:
    kserve = answers["kserve"]
    assert (kserve["live"], kserve["ready"], kserve["model_ready"]) == (True, True, True)
    for encoding in ("binary", "json"):
        probabilities = np.array(kserve[f"{encoding}_probabilities"])
        assert probabilities.shape == (2, 1000)
        np.testing.assert_allclose(probabilities, np.stack(answers["expected"]), atol=1e-6)
        assert kserve[f"{encoding}_id"] == f"kserve-{encoding}"  # the request's id, echoed
    assert "404" in kserve["unknown_model_error"]
    assert "'nope' is not served here" in kserve["unknown_model_error"]


def test_requests_are_counted_by_protocol(answers: dict[str, Any], live_backend: str) -> None:
    text = httpx.get(f"{live_backend}/metrics", timeout=30).text
    served = [line for line in text.splitlines() if line.startswith('protocol_requests_total{protocol="v2"')]
    counts = {line.split("status=")[1].split("}")[0].strip('"'): float(line.split()[-1]) for line in served}
    assert counts["200"] >= 12  # the clients' inferences, readiness and metadata calls
    assert counts["404"] >= 2  # the unknown models
    assert 'http_requests_total{method="POST",route="/v2/models/{model_name}/infer",status="200"}' in text
