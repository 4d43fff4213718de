"""The service's Prometheus metrics, in a registry of its own (one per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Request latencies from sub-millisecond (a cached tiny model) to the request budget.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every metric the service exports; names are what infra/ dashboards and alert rules use."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gradus_requests", "Requests answered, by route, status, alias and version",
                                ["route", "status", "alias", "version"], registry=r)
        self.errors = Counter("gradus_request_errors", "Requests answered with a 4xx or 5xx status",
                              ["route", "status", "alias", "version"], registry=r)
        self.latency = Histogram("gradus_request_latency_seconds", "Time from request received to answer",
                                 ["route", "alias", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("gradus_batch_size", "Texts per forward pass", ["alias", "version"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("gradus_queue_depth", "Requests waiting for the inference worker", ["alias"],
                                 registry=r)
        self.rejected = Counter("gradus_queue_rejections", "Requests refused with 503 because the queue was full",
                                ["alias"], registry=r)
        self.batch_retries = Counter("gradus_batch_retries", "Forward passes that failed for a batch of several "
                                     "requests, each then run again alone", ["alias"], registry=r)
        self.abandoned = Counter("gradus_requests_abandoned", "Requests whose client left before they were computed",
                                 ["alias"], registry=r)
        self.shadow_dropped = Counter("gradus_shadow_dropped", "Shadow copies not computed (its queue was full, "
                                      "or it failed)", registry=r)
        self.shadow_answers = Counter("gradus_shadow_answers", "Shadow copies by the version that computed them "
                                      "and outcome (ok, failed, dropped): the release's error rate in shadow",
                                      ["version", "outcome"], registry=r)
        self.predictions = Counter("gradus_predictions", "Texts answered, by predicted label, alias and version",
                                   ["label", "alias", "version"], registry=r)
        self.load_seconds = Histogram("gradus_model_load_seconds", "Time to load, verify and warm a version",
                                      ["version"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.load_failures = Counter("gradus_model_load_failures", "Versions that failed to load or verify",
                                     ["version", "alias"], registry=r)
        self.generation = Gauge("gradus_alias_generation", "The registry alias generation the service follows",
                                registry=r)
        self.model_info = Gauge("gradus_model_info", "1 for each version served, by alias (canary: weight label) "
                                "and the backend that answers for it (torch, onnx, onnx-int8, ensemble(...))",
                                ["alias", "version", "weight", "backend"], registry=r)
        self.ready = Gauge("gradus_ready", "1 when the service is ready (model loaded and warmed)", registry=r)
        self.log_dropped = Counter("gradus_prediction_log_dropped", "Prediction log rows dropped (buffer full)",
                                   registry=r)
        self.log_written = Counter("gradus_prediction_log_rows", "Prediction log rows written", registry=r)
        self.log_failures = Counter("gradus_prediction_log_write_failures", "Prediction log files that failed to "
                                    "write (rows kept for the next try while the buffer has room)", registry=r)
        self.drift_detected = Gauge("gradus_drift_detected", "1 when the drift monitor's latest verdict found drift",
                                    registry=r)
        self.drift_signals = Gauge("gradus_drift_signal_drifted", "1 per signal that drifted in the latest verdict",
                                   ["signal"], registry=r)
        self.drift_last_run = Gauge("gradus_drift_last_run_timestamp_seconds", "When the drift monitor last ran",
                                    registry=r)
        self.feedback = Counter("gradus_feedback", "Feedback labels received", ["alias", "version"], registry=r)
