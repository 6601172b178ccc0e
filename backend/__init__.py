"""Image classification service: a FastAPI app around ``backend.classifier``."""

__version__ = "0.1.0"
