"""Prometheus metrics, in a registry of the app's own (two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output and no dashboard reads them

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_INFERENCE_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.protocol_requests = Counter(
            "protocol_requests",
            "HTTP requests answered, by API protocol (native, v2: Open Inference Protocol, torchserve) and status",
            ["protocol", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "http_request_duration_seconds", "Time to answer a request", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.in_progress = Gauge("http_requests_in_progress", "Requests being answered now", registry=r)
        self.images = Counter("images_classified", "Images classified", registry=r)
        self.image_errors = Counter("image_errors", "Images refused, by reason", ["code"], registry=r)
        self.rejected = Counter("requests_shed", "Requests refused with 503 because the queue was full", registry=r)
        self.preprocess_latency = Histogram(
            "image_preprocess_duration_seconds",
            "Decode and preprocess time per image",
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("inference_queue_depth", "Images waiting for the model", registry=r)
        self.batch_size = Histogram(
            "inference_batch_size",
            "Images per forward pass",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.inference_latency = Histogram(
            "inference_duration_seconds", "Time of one forward pass", buckets=_INFERENCE_BUCKETS, registry=r
        )
        self.model_info = Info(
            "model", "The model being served: name, version (its bundle's content hash), runtime", registry=r
        )
        self.ready = Gauge("model_ready", "1 when the model is loaded and warmed up", registry=r)
        # The budgets against hostile input (set when /metrics is read, from the service and the server).
        self.decodes_in_progress = Gauge("image_decodes_in_progress", "Images being decoded now", registry=r)
        self.decode_memory = Gauge("image_decode_memory_bytes", "Decode memory leased now", registry=r)
        self.upload_memory = Gauge("upload_memory_bytes", "Request bodies held in memory now", registry=r)
        self.open_connections = Gauge("http_connections_open", "Open client connections", registry=r)
        self.decodes_stopped = Gauge(
            "image_decodes_stopped",
            "Images the decoders stopped or refused since start, by reason (a count; reported as a gauge)",
            ["reason"],
            registry=r,
        )
        # The prediction log (backend/predictions.py), when PREDICTION_LOG_DIR is set.
        self.prediction_log_records = Counter(
            "prediction_log_records", "Prediction-log records written to Parquet files", registry=r
        )
        self.prediction_log_files = Counter("prediction_log_files", "Prediction-log Parquet files written", registry=r)
        self.prediction_log_write_failures = Counter(
            "prediction_log_write_failures", "Prediction-log files that could not be written", registry=r
        )
        self.prediction_log_dropped = Counter(
            "prediction_log_dropped",
            "Prediction-log records dropped, by reason (queue_full: the writer is behind; write_failed; stopped)",
            ["reason"],
            registry=r,
        )
        self.prediction_log_queue = Gauge(
            "prediction_log_queue", "Prediction-log records waiting for the writer thread", registry=r
        )
        self.connections_refused = Gauge(
            "http_connections_refused",
            "Connections refused by the server's budgets since start, by reason (a count; reported as a gauge)",
            ["reason"],
            registry=r,
        )
