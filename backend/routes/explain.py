"""POST /explain: where in one image the model sees its top class (or a chosen one), as a heat map.

The method and the heat map are ``backend.saliency``'s; this is the HTTP side: the same body forms and
limits as /predict (one image), the same admission control (an explanation counts as the many images it
runs, ``MAX_FILES`` at a time at most), the same request timeout and error answers.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator, Field

from backend.deps import ServiceDep, SettingsDep
from backend.errors import EXPLAIN_ERRORS
from backend.routes.predict import decimal_integer
from backend.saliency import (
    DEFAULT_GRID,
    MAX_GRID,
    MIN_GRID,
    TURBO,
    InvalidClass,
    crop_box,
    fill_colour,
    heatmap_png,
    occlusion,
)
from backend.schemas import ExplainResponse
from backend.uploads import read_uploads

router = APIRouter(tags=["explain"])

MAX_CLASS_INDEX = 1_000_000  # above any model's; the model's own count is checked once it is loaded
# The classes listed beside the explained one, as /predict's default top_k.
TOP_K = 5

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "One image: a multipart `file` part, or the raw body.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "image/jpeg": _BINARY,
        "image/png": _BINARY,
        "image/webp": _BINARY,
        "application/octet-stream": _BINARY,
    },
}
_PNG_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The explanation as JSON; with `Accept: image/png` (and not application/json), the heat "
        "map PNG alone.",
        "content": {"image/png": _BINARY},
    }
}


def wants_png(accept: str | None) -> bool:
    """``Accept`` names image/png and not JSON: the heat map alone (``curl -H 'Accept: image/png' ... > map.png``)."""
    types = {part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")}
    return "image/png" in types and "application/json" not in types


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses={**EXPLAIN_ERRORS, **_PNG_ANSWER},
    openapi_extra={"requestBody": _REQUEST_BODY},
    summary="Where in an image the model sees a class (occlusion heat map)",
)
async def explain(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    grid: Annotated[
        # The bounds on the integer itself, so that the schema says them in JSON Schema's terms (minimum, maximum).
        Annotated[int, Field(ge=MIN_GRID, le=MAX_GRID)],
        BeforeValidator(decimal_integer),
        Query(description="cells per side; the explanation runs grid * grid + 1 images"),
    ] = DEFAULT_GRID,
    class_index: Annotated[
        Annotated[int, Field(ge=0, le=MAX_CLASS_INDEX)] | None,
        BeforeValidator(decimal_integer),
        Query(description="the class to explain (default: the image's top class)"),
    ] = None,
) -> Response:
    """Occlusion sensitivity: the crop the model sees is cut into grid x grid cells, each cell in turn is
    painted the mean colour and the image classified again; a cell scores by how much that costs the class.

    ```
    curl -F file=@cat.jpg 'http://127.0.0.1:8000/explain?grid=7'
    curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' -H 'Accept: image/png' \\
        http://127.0.0.1:8000/explain > heat.png
    ```
    """
    started = time.perf_counter()
    classifier, _, _ = service.ensure_ready()  # answer 503 before reading a body we could not use
    cells = grid**2
    # An explanation holds at most a full request's worth of images at once (MAX_FILES), each chunk admitted
    # on its own: it never takes more of the queue than a multi-image /predict, and the share kept for
    # one-image requests stays theirs (ModelService.ensure_capacity).
    chunk = min(settings.max_files, cells)
    service.ensure_capacity(chunk)
    classes = classifier.info.num_classes
    if class_index is not None and class_index >= classes:
        raise InvalidClass(class_index, classes)
    length = request.headers.get("content-length")
    with service.uploads.lease() as lease:
        async with asyncio.timeout(settings.request_timeout_s):
            uploads = await read_uploads(
                request.headers.get("content-type"),
                int(length) if length and length.isdigit() else None,
                request.stream(),
                lease,
                max_files=1,
                max_image_bytes=settings.max_image_bytes,
                max_request_bytes=settings.max_request_bytes,
            )
            [result] = await service.classify(uploads, TOP_K)
            index = result.predictions[0].index if class_index is None else class_index
            saliency = await occlusion(
                result.prepared.pixels,
                index,
                float(result.probabilities[index]),
                grid=grid,
                fill=fill_colour(classifier.info.preprocessing),
                infer=service.classify_pixels,
                chunk=chunk,
            )
            prepared = result.prepared
            box = crop_box(classifier.info.preprocessing, prepared.width, prepared.height)
            png, png_w, png_h = await asyncio.to_thread(
                heatmap_png, saliency.scores, box, prepared.width, prepared.height
            )
    if wants_png(request.headers.get("accept")):
        return Response(png, media_type="image/png")
    answer = ExplainResponse(
        model=classifier.info.name,
        model_version=classifier.version,
        filename=result.filename,
        format=prepared.format,
        width=prepared.width,
        height=prepared.height,
        explained={"index": index, "label": classifier.info.labels[index], "probability": saliency.probability},
        predictions=[{"index": p.index, "label": p.label, "probability": p.probability} for p in result.predictions],
        grid=saliency.grid,
        images=saliency.grid**2 + 1,
        scores=[[round(float(s), 4) for s in row] for row in saliency.scores],
        drops=[[round(float(d), 6) for d in row] for row in saliency.drops],
        crop_box={"left": box.left, "top": box.top, "right": box.right, "bottom": box.bottom},
        heatmap={"width": png_w, "height": png_h, "data": base64.b64encode(png).decode("ascii")},
        colormap=list(TURBO),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return Response(answer.model_dump_json(), media_type="application/json")
