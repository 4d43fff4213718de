"""The names of the service's Prometheus series, in one place: the service exports them (serving/metrics.py),
the release analysis and `gradus status` read them, and the alert rules and dashboards query them (a test
checks that every name those use is one of these)."""

from __future__ import annotations

REQUESTS = "gradus_requests"
REQUEST_ERRORS = "gradus_request_errors"
REQUEST_LATENCY = "gradus_request_latency_seconds"
BATCH_SIZE = "gradus_batch_size"
QUEUE_DEPTH = "gradus_queue_depth"
QUEUE_REJECTIONS = "gradus_queue_rejections"
BATCH_RETRIES = "gradus_batch_retries"
REQUESTS_ABANDONED = "gradus_requests_abandoned"
SHADOW_DROPPED = "gradus_shadow_dropped"
SHADOW_ANSWERS = "gradus_shadow_answers"
PREDICTIONS = "gradus_predictions"
MODEL_LOAD_SECONDS = "gradus_model_load_seconds"
MODEL_LOAD_FAILURES = "gradus_model_load_failures"
ALIAS_GENERATION = "gradus_alias_generation"
MODEL_INFO = "gradus_model_info"
READY = "gradus_ready"
LOG_DROPPED = "gradus_prediction_log_dropped"
LOG_ROWS = "gradus_prediction_log_rows"
LOG_WRITE_FAILURES = "gradus_prediction_log_write_failures"
DRIFT_DETECTED = "gradus_drift_detected"
DRIFT_SIGNAL_DRIFTED = "gradus_drift_signal_drifted"
DRIFT_LAST_RUN = "gradus_drift_last_run_timestamp_seconds"
FEEDBACK = "gradus_feedback"

COUNTERS = (REQUESTS, REQUEST_ERRORS, QUEUE_REJECTIONS, BATCH_RETRIES, REQUESTS_ABANDONED, SHADOW_DROPPED,
            SHADOW_ANSWERS, PREDICTIONS, MODEL_LOAD_FAILURES, LOG_DROPPED, LOG_ROWS, LOG_WRITE_FAILURES, FEEDBACK)
HISTOGRAMS = (REQUEST_LATENCY, BATCH_SIZE, MODEL_LOAD_SECONDS)
GAUGES = (QUEUE_DEPTH, ALIAS_GENERATION, MODEL_INFO, READY, DRIFT_DETECTED, DRIFT_SIGNAL_DRIFTED, DRIFT_LAST_RUN)


def total(counter: str) -> str:
    """The series a counter is exported as (Prometheus appends _total)."""
    return f"{counter}_total"


def bucket(histogram: str) -> str:
    return f"{histogram}_bucket"


def exported() -> set[str]:
    """Every series name a scrape of the service can show."""
    return ({total(c) for c in COUNTERS} | {c + "_created" for c in COUNTERS} | set(GAUGES)
            | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_count", "_sum", "_created")})
