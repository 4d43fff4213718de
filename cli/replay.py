"""`gradus replay FILE`: send the texts of a labeled file to a running service at a fixed rate, and post their
labels as feedback after a delay (late labels, as users give them), so releases and monitoring can be shown
and tested on one machine. Open loop: sends keep their schedule whatever the answers do."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import numpy as np


def feedback_body(label: Any) -> dict[str, Any]:
    """A labeled row's feedback: a list of entity objects (start, end, and the type under `type` or `label`, as
    exporters write them) is `entities`; another list is a label set (`labels`); anything else one `label`."""
    if isinstance(label, list | tuple) and label and all(isinstance(v, dict) for v in label):
        return {"entities": [{"start": v["start"], "end": v["end"], "type": v.get("type") or v.get("label")}
                             for v in label]}
    if isinstance(label, list | tuple):
        return {"labels": [str(v) for v in label]}
    return {"label": str(label)}


async def replay(url: str, texts: list[str], labels: list[Any], *, rate: float, duration: float,
                 feedback_delay: float, users: int) -> dict[str, Any]:
    """Send `rate` requests per second for `duration` seconds (cycling through the texts), each keyed by one of
    `users` routing keys; post each label `feedback_delay` seconds after its answer."""
    import httpx

    count = max(int(rate * duration), 1)
    statuses: Counter[str] = Counter()
    answered_by: Counter[str] = Counter()
    latencies: list[float] = []
    feedback: Counter[str] = Counter()
    pending: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        origin = time.perf_counter() + 0.05

        async def give_feedback(request_id: str, label: Any) -> None:
            await asyncio.sleep(feedback_delay)
            answer = feedback_body(label)
            try:
                response = await client.post("/v1/feedback", json={"request_id": request_id, **answer})
            except httpx.HTTPError as exc:  # the service went away meanwhile: counted, like a send
                feedback[type(exc).__name__] += 1
                return
            feedback[str(response.status_code)] += 1

        async def one(i: int) -> None:
            scheduled = origin + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            row = i % len(texts)
            try:
                response = await client.post("/v1/predict", json={"texts": [texts[row]], "key": f"user-{i % users}"})
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                return
            latencies.append(time.perf_counter() - scheduled)
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                body = response.json()
                answered_by[f"{body['model']['alias']} {body['model']['version']}"] += 1
                if labels[row] is not None:
                    pending.append(asyncio.create_task(give_feedback(body["request_id"], labels[row])))

        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.gather(*pending)
    return {"url": url, "sent": count, "rate_req_per_s": rate, "statuses": dict(statuses),
            "answered_by": dict(answered_by), "feedback": dict(feedback),
            "latency_ms": {q: round(float(np.percentile(latencies, int(q[1:]))) * 1000, 2) if latencies else None
                           for q in ("p50", "p99")}}


def load_rows(location: str, text_column: str, label_column: str | None) -> tuple[list[str], list[Any]]:
    """The texts (and labels, when the column is there: a label, or a list for a label set) of a file, glob or
    s3:// prefix."""
    from gradus.storage import read_tables

    tables = read_tables(location, columns=[text_column], fix="Pass --text-column (and --label-column)")
    texts: list[str] = []
    labels: list[Any] = []
    for table in tables:
        frame = table.frame[table.frame[text_column].map(lambda v: isinstance(v, str) and bool(v.strip()))]
        texts += frame[text_column].tolist()
        has_labels = label_column is not None and label_column in frame.columns
        column = frame[label_column].tolist() if has_labels else [None] * len(frame)
        labels += [value.tolist() if isinstance(value, np.ndarray) else value for value in column]  # Parquet lists
    return texts, labels


def summary_lines(report: dict[str, Any]) -> str:
    lines = [f"sent {report['sent']} requests to {report['url']} at {report['rate_req_per_s']:g}/s",
             "statuses  " + ", ".join(f"{k}: {v}" for k, v in sorted(report["statuses"].items())),
             "answered  " + ", ".join(f"{k}: {v}" for k, v in sorted(report["answered_by"].items())),
             "feedback  " + (", ".join(f"{k}: {v}" for k, v in sorted(report["feedback"].items())) or "none"),
             f"latency   p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms "
             "(from each scheduled send)"]
    return "\n".join(lines)
