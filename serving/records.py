"""What the service writes down: every answered text (the prediction log, read by the drift monitor and the
release analysis) and users' corrections (feedback, read by the `feedback` data source)."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from gradus import pii, storage
from gradus.config.operations import PREDICTION_LOG_COLUMNS, PredictionLogConfig

log = logging.getLogger("gradus.serving")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class PredictionLog:
    """A bounded in-memory buffer flushed to rolling files by a background thread, by size and by age. A
    request only appends to the buffer (never waits on I/O); a full buffer drops rows and counts them."""

    def __init__(self, cfg: PredictionLogConfig, root: Path, metrics: Any, endpoint_url: str | None,
                 pii_kinds: tuple[str, ...]) -> None:
        self.cfg, self.root, self.metrics, self.endpoint_url = cfg, root, metrics, endpoint_url
        self.pii_kinds = pii_kinds
        self.rows: deque[dict[str, Any]] = deque()
        self.oldest: float | None = None
        self.instance = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradus-prediction-log", daemon=True)
        self._thread.start()

    def record(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            room = self.cfg.buffer_rows - len(self.rows)
            kept = rows[: max(room, 0)]
            self.rows.extend(kept)
            if kept and self.oldest is None:
                self.oldest = time.monotonic()
        if len(kept) < len(rows):
            self.metrics.log_dropped.inc(len(rows) - len(kept))

    def _due(self) -> bool:
        with self._lock:
            return bool(self.rows) and (len(self.rows) >= self.cfg.flush_rows or
                                        time.monotonic() - (self.oldest or 0) >= self.cfg.flush_seconds)

    def _run(self) -> None:
        while not self._stop.wait(min(0.5, self.cfg.flush_seconds / 2)):
            if self._due():
                self.flush()

    def flush(self) -> str | None:
        """Write what is buffered as one file; on failure the rows go back to the buffer (while it has room)."""
        with self._lock:
            rows, self.rows, self.oldest = list(self.rows), deque(), None
        if not rows:
            return None
        frame = pd.DataFrame(rows, columns=list(PREDICTION_LOG_COLUMNS))
        if self.cfg.mask_pii:
            frame["text"] = frame["text"].map(lambda text: pii.mask_pii(text, self.pii_kinds))
        name = f"predictions-{_stamp()}-{self.instance}.{self.cfg.format}"
        try:
            path = storage.write_object(self.cfg.uri, name, _encode(frame, self.cfg.format), self.endpoint_url,
                                        self.root)
        except Exception as exc:
            self.metrics.log_failures.inc()
            log.error("prediction log: cannot write %s: %s", name, exc)
            self.record(rows)
            return None
        self.metrics.log_written.inc(len(rows))
        return path

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush()


def _encode(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


class FeedbackStore:
    """Labels users send for answered texts, as JSONL the `feedback` data source reads (text, label, ...).
    Recent requests are remembered (bounded) so feedback can name a request id instead of repeating text."""

    def __init__(self, location: str, root: Path, remember: int, endpoint_url: str | None) -> None:
        self.location, self.root, self.remember, self.endpoint_url = location, root, remember, endpoint_url
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.instance = f"{_stamp()[:8]}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()

    def remember_request(self, request_id: str, texts: list[str], labels: list[str], version: str | None,
                         alias: str) -> None:
        with self._lock:
            # Tuples of strings: once the collector has seen them it stops tracking them, so 100,000 remembered
            # requests add nothing to the full collections' work (see serving/models.py, settle_heap).
            self.recent[request_id] = {"texts": tuple(texts), "predicted": tuple(labels), "version": version,
                                       "alias": alias}
            while len(self.recent) > self.remember:
                self.recent.popitem(last=False)

    def request(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.recent.get(request_id)

    def append(self, record: dict[str, Any]) -> str:
        """One labeled record: appended to this process's file in a folder, one object per record on S3."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self.location.startswith("s3://"):
            return storage.write_object(self.location, f"feedback-{_stamp()}-{uuid.uuid4().hex[:8]}.jsonl",
                                        line.encode("utf-8"), self.endpoint_url)
        folder = storage.project_path(self.location, self.root)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"feedback-{self.instance}.jsonl"
        with self._lock, path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return str(path)
