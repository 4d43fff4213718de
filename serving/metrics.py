"""The service's Prometheus metrics, in a registry of its own (one per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gradus import telemetry as names

# Request latencies from sub-millisecond (a cached tiny model) to the request budget.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every metric the service exports; names are what infra/ dashboards and alert rules use."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(names.REQUESTS, "Requests answered, by route, status, alias and version",
                                ["route", "status", "alias", "version"], registry=r)
        self.errors = Counter(names.REQUEST_ERRORS, "Requests answered with a 4xx or 5xx status",
                              ["route", "status", "alias", "version"], registry=r)
        self.latency = Histogram(names.REQUEST_LATENCY, "Time from request received to answer",
                                 ["route", "alias", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(names.BATCH_SIZE, "Texts per forward pass", ["alias", "version"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge(names.QUEUE_DEPTH, "Requests waiting for the inference worker", ["alias"],
                                 registry=r)
        self.rejected = Counter(names.QUEUE_REJECTIONS, "Requests refused with 503 because the queue was full",
                                ["alias"], registry=r)
        self.batch_retries = Counter(names.BATCH_RETRIES, "Forward passes that failed for a batch of several "
                                     "requests, each then run again alone", ["alias"], registry=r)
        self.abandoned = Counter(names.REQUESTS_ABANDONED, "Requests whose client left before they were computed",
                                 ["alias"], registry=r)
        self.shadow_dropped = Counter(names.SHADOW_DROPPED, "Shadow copies not computed (its queue was full, "
                                      "or it failed)", registry=r)
        self.shadow_answers = Counter(names.SHADOW_ANSWERS, "Shadow copies by the version that computed them "
                                      "and outcome (ok, failed, dropped): the release's error rate in shadow",
                                      ["version", "outcome"], registry=r)
        self.predictions = Counter(names.PREDICTIONS, "Texts answered, by predicted label, alias and version",
                                   ["label", "alias", "version"], registry=r)
        self.load_seconds = Histogram(names.MODEL_LOAD_SECONDS, "Time to load, verify and warm a version",
                                      ["version"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.load_failures = Counter(names.MODEL_LOAD_FAILURES, "Versions that failed to load or verify",
                                     ["version", "alias"], registry=r)
        self.generation = Gauge(names.ALIAS_GENERATION, "The registry alias generation the service follows",
                                registry=r)
        self.model_info = Gauge(names.MODEL_INFO, "1 for each version served, by alias (canary: weight label) "
                                "and the backend that answers for it (torch, onnx, onnx-int8, ensemble(...))",
                                ["alias", "version", "weight", "backend"], registry=r)
        self.ready = Gauge(names.READY, "1 when the service is ready (model loaded and warmed)", registry=r)
        self.log_dropped = Counter(names.LOG_DROPPED, "Prediction log rows dropped (buffer full)",
                                   registry=r)
        self.log_written = Counter(names.LOG_ROWS, "Prediction log rows written", registry=r)
        self.log_failures = Counter(names.LOG_WRITE_FAILURES, "Prediction log files that failed to "
                                    "write (rows kept for the next try while the buffer has room)", registry=r)
        self.drift_detected = Gauge(names.DRIFT_DETECTED, "1 when the drift monitor's latest verdict found drift",
                                    registry=r)
        self.drift_signals = Gauge(names.DRIFT_SIGNAL_DRIFTED, "1 per signal that drifted in the latest verdict",
                                   ["signal"], registry=r)
        self.drift_last_run = Gauge(names.DRIFT_LAST_RUN, "When the drift monitor last ran",
                                    registry=r)
        self.feedback = Counter(names.FEEDBACK, "Feedback labels received", ["alias", "version"], registry=r)
