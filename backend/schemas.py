"""Response bodies of the API. Every response, errors included, has a typed schema in /docs."""

from __future__ import annotations

from typing import Literal

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
    top_k: int
    results: list[ImagePrediction] = Field(description="one entry per image, in the order sent")
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


class ModelResponse(BaseModel):
    name: str = Field(examples=["efficientnet_lite0"])
    weights: str
    source: Literal["embedded", "torchvision", "checkpoint"]
    runtime: Literal["onnx", "torch"]
    num_classes: int
    input_size: tuple[int, int, int] = Field(description="height, width, channels of the model input")
    preprocessing: PreprocessingInfo
    max_batch_size: int
    max_files: int
    max_image_bytes: int
    max_image_pixels: int
