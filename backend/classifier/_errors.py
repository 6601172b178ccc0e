"""Errors the classifier raises. Each message tells the caller what to do about it."""

from __future__ import annotations


class ClassifierError(Exception):
    """Base class of everything the classifier package raises on purpose."""

    code = "classifier_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageError(ClassifierError):
    """The bytes a caller sent cannot be classified."""

    code = "invalid_image"


class InvalidImage(ImageError):
    """A recognised image format, but the data is truncated or corrupt."""

    code = "invalid_image"


class UnsupportedImage(ImageError):
    """The data is not an image in a format we decode."""

    code = "unsupported_image"


class DecodeTimeout(ImageError):
    """Decoding the image used more CPU time than its budget, so it was stopped."""

    code = "decode_timeout"


class ImageTooLarge(ImageError):
    """The image exceeds the byte or pixel limit."""

    code = "image_too_large"


class ModelConfigError(ClassifierError):
    """The configured model cannot be built: unknown name, bad weights, unreadable checkpoint or labels."""

    code = "model_config_error"
