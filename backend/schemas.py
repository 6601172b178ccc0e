"""Response bodies of the API. Every response, errors included, has a typed schema in /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ClassScore(BaseModel):
    index: int = Field(description="class index in the model's output", examples=[281])
    label: str = Field(description="human-readable class name", examples=["tabby"])
    probability: float = Field(ge=0.0, le=1.0, description="softmax probability", examples=[0.62])


class ImagePrediction(BaseModel):
    filename: str | None = Field(description="the uploaded file's name (sanitised); null for a raw body")
    format: str = Field(description="image format as decoded", examples=["JPEG"])
    width: int = Field(description="original width in pixels, after EXIF rotation")
    height: int = Field(description="original height in pixels, after EXIF rotation")
    predictions: list[ClassScore] = Field(description="top-k classes, most probable first")


class PredictResponse(BaseModel):
    model: str = Field(description="name of the model that answered", examples=["efficientnet_lite0"])
    model_version: str = Field(
        description="the model's version: a content hash of its exported bundle (as /model and /metrics say)",
        examples=["3f9a1c0d5e7b2a64"],
    )
    top_k: int
    results: list[ImagePrediction] = Field(description="one entry per image, in the order sent")
    elapsed_ms: float = Field(description="server time for the whole request")


class CropBoxModel(BaseModel):
    """Where the model's input crop lies on the original image (after EXIF rotation), in its pixels."""

    left: float
    top: float
    right: float
    bottom: float


class HeatmapImage(BaseModel):
    media_type: Literal["image/png"] = "image/png"
    width: int = Field(description="the original's aspect, at most 256 pixels on the longer side")
    height: int
    data: str = Field(description="the PNG, base64: RGBA, the colour map over the crop box, transparent elsewhere")


class ExplainResponse(BaseModel):
    """Occlusion sensitivity of one class on one image (POST /explain)."""

    model: str = Field(examples=["efficientnet_lite0"])
    model_version: str
    filename: str | None = Field(description="the uploaded file's name (sanitised); null for a raw body")
    format: str = Field(description="image format as decoded", examples=["JPEG"])
    width: int = Field(description="original width in pixels, after EXIF rotation")
    height: int = Field(description="original height in pixels, after EXIF rotation")
    explained: ClassScore = Field(description="the class explained (the top class unless class_index said)")
    predictions: list[ClassScore] = Field(description="the image's top 5 classes, most probable first")
    method: Literal["occlusion"] = "occlusion"
    grid: int = Field(description="cells per side: rows and columns of scores")
    images: int = Field(description="forward passes the explanation ran: grid * grid masked crops and the image")
    scores: list[list[float]] = Field(
        description="rows x cols, top row first: each cell's drop over the largest drop, 0..1 (negative drops are 0)"
    )
    drops: list[list[float]] = Field(
        description="rows x cols: the class's probability minus its probability with the cell masked (may be < 0)"
    )
    crop_box: CropBoxModel = Field(description="where the grid lies on the original image, in original pixels")
    heatmap: HeatmapImage = Field(description="the scores as a PNG laid out like the original image")
    colormap: list[tuple[int, int, int]] = Field(
        description="the heat map's colours from score 0 to 1, evenly spaced (for a legend)"
    )
    elapsed_ms: float = Field(description="server time for the whole request")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and what to do about it")
    code: str = Field(description="stable machine-readable reason", examples=["unsupported_image"])
    filename: str | None = Field(None, description="the offending file, when one image of several is at fault")
    index: int | None = Field(None, description="position of the offending file in the request")


class HealthResponse(BaseModel):
    status: Literal["ok", "wedged"] = "ok"
    detail: str | None = None


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed", "stopping"]
    detail: str | None = None


class PreprocessingInfo(BaseModel):
    resize_size: int = Field(description="shorter side is resized to this")
    crop_size: int = Field(description="then centre-cropped to this square")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


class ProtocolRoutes(BaseModel):
    """Where the same model answers in the standard protocols (docs/migrating.md)."""

    v2_metadata: str = Field(description="Open Inference Protocol v2 model metadata", examples=["/v2/models/m"])
    v2_infer: str = Field(description="v2 inference: IMAGE (BYTES [N]) or PIXELS (FP32 [N,3,H,W]) in")
    torchserve_predictions: str = Field(description="TorchServe inference: raw body or multipart 'data'")


class ModelResponse(BaseModel):
    name: str = Field(examples=["efficientnet_lite0"])
    version: str = Field(
        description="a content hash of the exported bundle (model.onnx and model.json): another model, another version",
        examples=["3f9a1c0d5e7b2a64"],
    )
    weights: str
    source: Literal["embedded", "torchvision", "checkpoint"]
    runtime: Literal["onnx", "openvino", "torch"]
    num_classes: int
    input_size: tuple[int, int, int] = Field(description="height, width, channels of the model input")
    preprocessing: PreprocessingInfo
    max_batch_size: int
    max_files: int
    max_image_bytes: int
    max_image_pixels: int
    protocols: ProtocolRoutes


# --- Open Inference Protocol v2 (KServe v2, Triton HTTP/REST): backend/routes/v2.py


class V2ErrorResponse(BaseModel):
    error: str = Field(description="what went wrong and what to do about it (the protocol's error body)")


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="protocol extensions: binary_tensor_data, classification")


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, str] | None = None


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2InferInput(BaseModel):
    name: Literal["IMAGE", "PIXELS"]
    shape: list[int] = Field(description="IMAGE: [N]; PIXELS: [N, 3, H, W]")
    datatype: Literal["BYTES", "FP32"] = Field(description="IMAGE is BYTES, PIXELS is FP32")
    parameters: dict[str, int | bool | str] | None = Field(
        None, description="binary_data_size: this input's bytes after the JSON header (binary extension)"
    )
    data: list[Any] | None = Field(None, description="IMAGE: base64 strings; PIXELS: numbers, flat or nested")


class V2RequestedOutput(BaseModel):
    name: Literal["PROBABILITIES"]
    parameters: dict[str, int | bool] | None = Field(
        None, description="classification: k (top-k 'score:index:label' strings); binary_data: true"
    )


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, int | bool | str] | None = Field(None, description="binary_data_output: true")
    inputs: list[V2InferInput] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32", "BYTES"]
    parameters: dict[str, int] | None = Field(None, description="binary_data_size, when the data is binary")
    data: list[float] | list[str] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2InferOutput]


# --- TorchServe's inference and management APIs (the parts a client of image_classifier uses): routes/torchserve.py


class TorchServeErrorResponse(BaseModel):
    code: int = Field(description="the HTTP status")
    type: str = Field(examples=["ModelNotFoundException"])
    message: str


class TorchServePing(BaseModel):
    status: Literal["Healthy", "Unhealthy"]


class TorchServeModelEntry(BaseModel):
    modelName: str  # noqa: N815 - TorchServe's field names
    modelUrl: str  # noqa: N815


class TorchServeModels(BaseModel):
    models: list[TorchServeModelEntry]


class TorchServeWorker(BaseModel):
    id: str
    startTime: str  # noqa: N815
    status: Literal["READY"]
    memoryUsage: int  # noqa: N815
    pid: int
    gpu: bool
    gpuUsage: str  # noqa: N815


class TorchServeModelDescription(BaseModel):
    modelName: str  # noqa: N815
    modelVersion: str  # noqa: N815
    modelUrl: str  # noqa: N815
    runtime: str
    minWorkers: int  # noqa: N815
    maxWorkers: int  # noqa: N815
    batchSize: int  # noqa: N815
    maxBatchDelay: int  # noqa: N815
    loadedAtStartup: bool  # noqa: N815
    workers: list[TorchServeWorker]
