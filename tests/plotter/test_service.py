"""The R plotting service, started for real (``Rscript plotter/main.R``): charts of real predictions, and what
it does with hostile requests (bad JSON, wrong shapes, oversized or chunked bodies, labels that look like R
code or plotmath)."""

from __future__ import annotations

import copy
import io
import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.plotter.conftest import RunningPlotter

pytestmark = pytest.mark.slow  # a server process (R) per module

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def plot(plotter: RunningPlotter, body: bytes | dict[str, Any], **params: str | int) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{plotter.url}/plot",
        params=params,
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def png_size(response: httpx.Response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(response.content), formats=["PNG"]) as image:
        image.verify()
        return image.size


def assert_refusal(response: httpx.Response, status: int, code: str) -> str:
    """A JSON refusal with ``status``, ``code`` and a sentence in ``detail`` (what to do)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert len(body["detail"]) > 20
    return str(body["detail"])


def test_health(plotter: RunningPlotter) -> None:
    response = httpx.get(f"{plotter.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("answer", "params", "size"),
    [
        ("one", {}, (800, 400)),  # the default size; auto: bars for one image
        ("one", {"chart": "bars", "width": 640, "height": 480}, (640, 480)),
        ("both", {}, (800, 400)),  # auto: compare for several
        ("both", {"chart": "bars", "width": 2000, "height": 200}, (2000, 200)),
        ("both", {"chart": "compare", "width": 200, "height": 2000}, (200, 2000)),
    ],
)
def test_a_png_of_the_size_asked_for_comes_back_for_real_predictions(
    plotter: RunningPlotter,
    predict_answers: dict[str, dict[str, Any]],
    answer: str,
    params: dict[str, str | int],
    size: tuple[int, int],
) -> None:
    assert png_size(plot(plotter, predict_answers[answer], **params)) == size


def test_the_two_chart_types_differ_and_auto_picks_by_the_number_of_images(
    plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]]
) -> None:
    both = predict_answers["both"]
    bars, compare, auto = (plot(plotter, both, chart=kind).content for kind in ("bars", "compare", "auto"))
    assert bars != compare
    assert auto == compare
    one = predict_answers["one"]
    assert plot(plotter, one).content == plot(plotter, one, chart="bars").content


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00garbage", "bad_json"),
        (b"[" * 100_000 + b"]" * 100_000, "bad_json"),  # nested too deep for R: a 400, not a crash
        (b"[1, 2, 3]", "bad_shape"),
        (b'{"model": "x"}', "bad_shape"),
        (b'{"results": []}', "bad_shape"),
        (b'{"results": [{"filename": "a.jpg"}]}', "bad_shape"),
        (b'{"results": [{"predictions": [{"label": "cat", "probability": "high"}]}]}', "bad_shape"),
        (b'{"results": [{"predictions": [{"label": "cat", "probability": 1.5}]}]}', "bad_shape"),
        (b'{"results": [{"predictions": [{"label": "cat", "probability": null}]}]}', "bad_shape"),
    ],
)
def test_bad_json_or_the_wrong_shape_gets_a_400_that_says_what_to_send(
    plotter: RunningPlotter, body: bytes, code: str
) -> None:
    detail = assert_refusal(plot(plotter, body), 400, code)
    assert "/predict answer" in detail


def test_an_empty_body_is_refused(plotter: RunningPlotter) -> None:
    assert_refusal(plot(plotter, b""), 400, "empty_body")


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "multipart/form-data; boundary=x", "image/png"])
def test_the_body_is_read_as_json_whatever_its_content_type(
    plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]], content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    content = json.dumps(predict_answers["one"]).encode()
    response = httpx.post(f"{plotter.url}/plot", content=content, headers=headers, timeout=30)
    assert png_size(response) == (800, 400)
    assert_refusal(httpx.post(f"{plotter.url}/plot", content=b"x=1", headers=headers, timeout=30), 400, "bad_json")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"width": 199}, "bad_size"),
        ({"height": 2001}, "bad_size"),
        ({"width": "800.5"}, "bad_size"),
        ({"width": "1e3"}, "bad_size"),
        ({"height": "-400"}, "bad_size"),
        ({"chart": "pie"}, "bad_chart"),
        ({"chart": "bars); system('id')"}, "bad_chart"),
    ],
)
def test_sizes_and_chart_types_out_of_bounds_are_refused(
    plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]], params: dict[str, str | int], code: str
) -> None:
    assert_refusal(plot(plotter, predict_answers["one"], **params), 400, code)


def test_too_many_images_are_refused(plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]]) -> None:
    answer = copy.deepcopy(predict_answers["one"])
    answer["results"] = answer["results"] * 17
    detail = assert_refusal(plot(plotter, answer), 413, "too_many_results")
    assert "16" in detail


def test_many_classes_are_cut_to_the_ten_most_probable(
    plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]]
) -> None:
    """A /predict answer with top_k=1000 is valid: drawn with its 10 most probable classes."""
    answer = copy.deepcopy(predict_answers["one"])
    predictions = [{"index": i, "label": f"class {i}", "probability": 0.001} for i in range(1000)]
    answer["results"][0]["predictions"] = predictions
    ten = copy.deepcopy(answer)
    ten["results"][0]["predictions"] = predictions[:10]
    assert plot(plotter, answer).content == plot(plotter, ten).content


@pytest.mark.parametrize("length", [1024 * 1024 + 1, 5_000_000_000])
def test_an_oversized_body_is_refused_from_its_headers(plotter: RunningPlotter, length: int) -> None:
    """Content-Length over 1 MiB: refused before the body is read (only the headers are sent here: a client
    that sends its body anyway may find the connection closed under it, which is the point)."""
    host, port = plotter.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /plot HTTP/1.1\r\nHost: plotter\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(body)["code"] == "too_large"


def test_a_body_of_the_limit_is_read(plotter: RunningPlotter) -> None:
    """1 MiB exactly is accepted and parsed (a JSON array of blanks: the wrong shape)."""
    assert_refusal(plot(plotter, b"[" + b" " * (1024 * 1024 - 2) + b"]"), 400, "bad_shape")


def test_a_chunked_body_is_refused(plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]]) -> None:
    body = json.dumps(predict_answers["one"]).encode()
    response = httpx.post(f"{plotter.url}/plot", content=iter([body]), timeout=30)  # no length: chunked
    assert_refusal(response, 411, "length_required")


def hostile_labels(marker: Path) -> list[str]:
    return [
        f"a\"; system('touch {marker}')",
        f"`r system('touch {marker}')`",
        f"{{system('touch {marker}')}}",
        "alpha^2",
        "paste(x[1], 'y')",
        "bold(cat) ~ italic(dog)",
        "%s %d %n",
        "line\nbreak\ttab\x00nul\x1b[31m",
        "猫 🐈 ﷽ \u202ereversed",
        "x" * 5000,
        "",
    ]


def test_hostile_labels_are_drawn_as_text_and_nothing_happens(
    plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    marker = tmp_path / "evaluated"
    labels = hostile_labels(marker)
    answer = copy.deepcopy(predict_answers["both"])
    for result in answer["results"]:
        result["filename"] = f"$(touch {marker}).jpg"
        result["predictions"] = [
            {"index": i, "label": label, "probability": 0.9 / (i + 1)} for i, label in enumerate(labels[:10])
        ]
    answer["model"] = f"system('touch {marker}')"
    for kind in ("bars", "compare"):
        assert png_size(plot(plotter, answer, chart=kind)) == (800, 400)
    one = copy.deepcopy(answer)
    one["results"] = one["results"][:1]
    one["results"][0]["predictions"] = [{"index": 0, "label": labels[-2], "probability": 0.5}]
    assert png_size(plot(plotter, one)) == (800, 400)
    assert not marker.exists()
    # still serving
    assert httpx.get(f"{plotter.url}/health", timeout=10).status_code == 200


def test_the_charts_never_parse_text() -> None:
    """What would make ggplot2 read a label as an expression (plotmath) or R evaluate it: none of it in the
    service's code (the hostile-label test above shows the result; this names the cause)."""
    code = "\n".join(
        line.split("#", 1)[0] for path in (ROOT / "plotter").glob("*.R") for line in path.read_text().splitlines()
    )
    for forbidden in (r"parse\s*=\s*T", r"label_parsed", r"label_bquote", r"\bparse\(", r"\beval\(", r"expression\("):
        assert not re.search(forbidden, code), forbidden


def test_logs_are_json_lines_with_severity_and_message(
    plotter: RunningPlotter, predict_answers: dict[str, dict[str, Any]]
) -> None:
    assert plot(plotter, predict_answers["one"]).status_code == 200
    assert plot(plotter, b"{").status_code == 400
    records = [json.loads(line) for line in plotter.log_lines()]  # every line, stderr's too, is JSON
    assert all({"severity", "message"} <= record.keys() for record in records), records
    assert {"INFO", "WARNING"} <= {record["severity"] for record in records}
    drawn = [r for r in records if r["message"] == "drew a chart"]
    assert drawn
    assert {"chart", "width", "height", "bytes", "ms"} <= drawn[-1].keys()


def test_unknown_paths_get_a_json_404(plotter: RunningPlotter) -> None:
    response = httpx.get(f"{plotter.url}/__docs__/", timeout=10)
    assert_refusal(response, 404, "not_found")
