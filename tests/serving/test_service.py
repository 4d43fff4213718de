"""The inference service as clients meet it: `gradus serve` in its own process on loopback, a real registry,
tiny classifiers, real HTTP. Each test can fail: answers are compared with the model's own output, counts
with what was sent, versions with the registry's history."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from gradus.config.operations import DriftConfig
from gradus.config.pipeline import FeedbackSource
from gradus.monitoring.drift import load_batch
from gradus.servable import load_version
from tasks.ingest import load_source
from tests.conftest import BANKING77
from tests.serving.conftest import ADMIN_TOKEN, Project, Service, start_service, stop_service

pytestmark = pytest.mark.slow


def texts(n: int, offset: int = 0) -> list[str]:
    return pd.read_csv(BANKING77 / "test.csv")["text"].iloc[offset : offset + n].tolist()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


async def fire(url: str, bodies: list[dict], concurrency: int, path: str = "/v1/predict") -> list[dict]:
    """Send bodies with `concurrency` in flight; record status, version and send/receive times."""
    results: list[dict] = [{} for _ in bodies]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                start = time.time()
                try:
                    response = await client.post(path, json=bodies[i])
                    body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                        else {}
                    results[i] = {"status": response.status_code, "body": body, "start": start, "end": time.time()}
                except httpx.HTTPError as exc:
                    results[i] = {"status": None, "error": repr(exc), "start": start, "end": time.time()}

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def test_answers_match_the_models_own_output(service: Service, project: Project) -> None:
    sample = texts(60)
    answers = []
    for start in range(0, len(sample), 12):
        response = service.client.post("/v1/predict", json={"texts": sample[start : start + 12]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"version": project.versions[1], "alias": "champion"} and len(body["request_id"]) == 32
        answers += body["predictions"]
    own = load_version(project.registry(), project.versions[1]).predict(sample)
    expected = own.labels()
    probabilities = own.probabilities
    margin = np.sort(probabilities, axis=1)[:, -1] - np.sort(probabilities, axis=1)[:, -2]
    for i, answer in enumerate(answers):
        assert abs(answer["confidence"] - probabilities[i].max()) < 0.02
        if margin[i] > 0.02:  # bf16 rounding may reorder near-ties only
            assert answer["label"] == expected[i], i
        assert answer["top_k"][0]["label"] == answer["label"] and len(answer["top_k"]) == 3
    infer = service.client.post("/v2/models/gradus/infer", json={"inputs": [
        {"name": "text", "shape": [3], "datatype": "BYTES", "data": sample[:3]}]}).json()
    assert infer["model_version"] == project.versions[1]
    assert infer["outputs"][0]["data"] == [a["label"] for a in answers[:3]]


@pytest.mark.timing
def test_concurrent_requests_are_batched(project: Project) -> None:
    """Requests that arrive while the lanes are busy share the next forward pass. (The tiny model answers in
    about a millisecond, so HTTP would be the bottleneck and little would ever queue: 20 ms per pass are
    injected, as a real model takes.)"""
    slow = start_service(project, env={"GRADUS_FAULT_DELAY_MS": "20"})
    try:
        results = asyncio.run(fire(slow.url, [{"texts": [t]} for t in texts(200)], concurrency=32))
        assert all(r["status"] == 200 for r in results)
        count = slow.metric("gradus_batch_size_count", alias="champion")
        total = slow.metric("gradus_batch_size_sum", alias="champion")
    finally:
        stop_service(slow)
    assert total == 200 and total / count > 4, (total, count)  # texts per forward pass, on average


def test_two_champion_changes_under_load_fail_no_request(service: Service, project: Project) -> None:
    registry = project.registry()
    bodies = [{"texts": [t]} for t in texts(2000, 0)] if len(texts(2000)) >= 2000 else None
    assert bodies is not None
    history = [(time.time(), project.versions[1])]

    async def load_and_swap() -> list[dict]:
        sender = asyncio.create_task(fire(service.url, bodies, concurrency=32))
        for version in (project.versions[0], project.versions[2]):
            await asyncio.sleep(1.0)
            await asyncio.to_thread(registry.promote, version, run="test", reason="swap under load")
            history.append((time.time(), version))
        return await sender

    results = asyncio.run(load_and_swap())
    failed = [r for r in results if r["status"] != 200]
    assert not failed, failed[:3]
    swap_lag = 10.0  # poll interval + load + warm of the new version, generously
    for r in results:
        version = r["body"]["model"]["version"]
        valid = [v for i, (t, v) in enumerate(history)
                 if t <= r["end"] and (i + 1 == len(history) or history[i + 1][0] + swap_lag >= r["start"])]
        assert version in valid, (version, r, history)
    answered_by = {r["body"]["model"]["version"] for r in results}
    assert project.versions[2] in answered_by, "the last champion never answered: no swap happened"
    wait_for(lambda: service.client.post("/v1/predict", json={"texts": ["x"]}).json()["model"]["version"]
             == project.versions[2])


MALFORMED = [
    ("not json", {"content": b"{texts: [", "headers": {"content-type": "application/json"}}),
    ("invalid utf-8", {"content": b'{"texts": ["\xff\xfe"]}', "headers": {"content-type": "application/json"}}),
    ("texts a string", {"json": {"texts": "hello"}}),
    ("texts numbers", {"json": {"texts": [1, 2]}}),
    ("empty texts", {"json": {"texts": []}}),
    ("missing texts", {"json": {"key": "a"}}),
    ("extra field", {"json": {"texts": ["a"], "model": "other"}}),
    ("null text", {"json": {"texts": [None]}}),
    ("key a number", {"json": {"texts": ["a"], "key": 5}}),
    ("too many texts", {"json": {"texts": ["a"] * 65}}),
    ("text too long", {"json": {"texts": ["a" * 2001]}}),
    ("body too large", {"content": b'{"texts": ["' + b"a" * (1 << 20) + b'"]}',
                        "headers": {"content-type": "application/json"}}),
    ("json array", {"json": [1, 2, 3]}),
    ("form encoded", {"content": b"texts=a", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
]
V2_MALFORMED = [
    ("v2 wrong datatype", {"json": {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": ["a"]}]}}),
    ("v2 shape mismatch", {"json": {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}}),
    ("v2 no inputs", {"json": {"inputs": []}}),
]


def test_a_thousand_malformed_requests_get_4xx_and_the_service_stays_ready(service: Service) -> None:
    kinds = [(name, "/v1/predict", kwargs) for name, kwargs in MALFORMED]
    kinds += [(name, "/v2/models/gradus/infer", kwargs) for name, kwargs in V2_MALFORMED]
    kinds += [("unknown model", "/v2/models/other/infer",
               {"json": {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}}),
              ("feedback unknown label", "/v1/feedback", {"json": {"text": "a", "label": "no_such_label"}}),
              ("feedback unknown request", "/v1/feedback", {"json": {"request_id": "f" * 32, "label": "refund"}}),
              ("feedback both references", "/v1/feedback",
               {"json": {"request_id": "a", "text": "b", "label": "refund"}})]
    assert len(kinds) >= 10
    statuses: dict[str, set[int]] = {}
    for i in range(1000):
        name, path, kwargs = kinds[i % len(kinds)]
        response = service.client.post(path, **kwargs)
        statuses.setdefault(name, set()).add(response.status_code)
    assert all(all(400 <= s < 500 for s in codes) for codes in statuses.values()), statuses
    assert statuses["body too large"] == {413} and statuses["too many texts"] == {422}
    chunked = service.client.post("/v1/predict", content=iter([b'{"texts": ["', b"a" * (1 << 20), b'"]}']),
                                  headers={"content-type": "application/json"})  # no content-length
    assert chunked.status_code == 413 and "serving.max_body_bytes" in chunked.json()["detail"]
    assert statuses["unknown model"] == {404}
    detail = service.client.post("/v1/predict", json={"texts": ["a"] * 65}).json()["detail"]
    assert "serving.max_texts=64" in detail
    assert service.client.get("/v2/health/ready").status_code == 200
    assert service.metric("gradus_request_errors_total") >= 1000
    assert not any(status.startswith("5") for status in _statuses(service))


def _statuses(service: Service) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels["status"] for f in text_string_to_metric_families(service.client.get("/metrics").text)
            for s in f.samples if s.name == "gradus_requests_total"}


@pytest.mark.parametrize("lanes", [1, 2])
def test_lanes_run_batches_side_by_side(project: Project, lanes: int) -> None:
    """Four one-text batches that each take 500 ms (injected): one lane answers them one after another, two
    lanes two at a time, so the last answer comes after ~2 s or ~1 s."""
    project.set(serving__max_batch_size=1, serving__max_wait_ms=0, serving__lanes=lanes)
    slow = start_service(project, env={"GRADUS_FAULT_DELAY_MS": "500"})
    try:
        started = time.time()
        results = asyncio.run(fire(slow.url, [{"texts": [t]} for t in texts(4)], concurrency=4))
        elapsed = time.time() - started
        assert all(r["status"] == 200 for r in results), results
        assert slow.metric("gradus_batch_size_count", alias="champion") == 4
    finally:
        stop_service(slow)
    assert (1.9 <= elapsed < 2.9) if lanes == 1 else (0.9 <= elapsed < 1.9), (lanes, elapsed)
    assert f"{lanes} lane(s) per served model" in slow.output()


def test_a_full_queue_answers_503_at_once(project: Project) -> None:
    project.set(serving__queue_size=2, serving__max_batch_size=1, serving__max_wait_ms=0)
    slow = start_service(project, env={"GRADUS_FAULT_DELAY_MS": "400"})
    try:
        results = asyncio.run(fire(slow.url, [{"texts": ["where is my card"]}] * 12, concurrency=12))
    finally:
        stop_service(slow)
    rejected = [r for r in results if r["status"] == 503]
    assert rejected and any(r["status"] == 200 for r in results)
    assert all(r["end"] - r["start"] < 0.1 for r in rejected), [r["end"] - r["start"] for r in rejected]
    assert all(r["status"] in (200, 503) for r in results)


def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(service: Service, project: Project) -> None:
    registry = project.registry()
    bad = project.versions[2]
    weights = project.root / "registry" / "versions" / bad / "files" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    registry.promote(bad, run="test", reason="tampered")
    reload = service.client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reload.status_code == 200 and bad in reload.json()["refused"]
    assert "sha256" in reload.json()["refused"][bad]
    answer = service.client.post("/v1/predict", json={"texts": ["lost my card"]})
    assert answer.status_code == 200 and answer.json()["model"]["version"] == project.versions[1]
    assert service.metric("gradus_model_load_failures_total", version=bad) >= 1
    assert "not serving" in service.output() and bad in service.output()


def test_admin_needs_the_right_bearer_token(service: Service) -> None:
    assert service.client.post("/admin/reload").status_code == 401
    assert service.client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert service.client.post("/admin/reload", headers={"Authorization": "Basic x"}).status_code == 401
    assert service.client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_feedback_is_written_and_read_back_by_the_feedback_source(service: Service, project: Project) -> None:
    answer = service.client.post("/v1/predict", json={"texts": ["I lost my card", "refund me"]}).json()
    by_id = service.client.post("/v1/feedback", json={"request_id": answer["request_id"], "index": 1,
                                                      "label": "refund"})
    by_text = service.client.post("/v1/feedback", json={"text": "what is my balance", "label": "balance"})
    assert by_id.status_code == by_text.status_code == 201
    unknown = service.client.post("/v1/feedback", json={"text": "x", "label": "pizza"})
    assert unknown.status_code == 422 and "'pizza'" in unknown.json()["detail"]
    missing = service.client.post("/v1/feedback", json={"request_id": "0" * 32, "label": "refund"})
    assert missing.status_code == 404 and "0" * 32 in missing.json()["detail"]  # not among the answered ones
    [(frame, _)] = load_source(FeedbackSource(path=str(project.root / "feedback" / "*.jsonl")))
    assert frame[["text", "label"]].values.tolist() == [["refund me", "refund"], ["what is my balance", "balance"]]
    records = [json.loads(line) for line in next((project.root / "feedback").glob("*.jsonl")).read_text().splitlines()]
    assert records[0]["version"] == project.versions[1] and records[0]["predicted_label"]


def test_the_prediction_log_is_what_the_drift_monitor_reads(service: Service, project: Project) -> None:
    sent = texts(120, offset=500)
    for start in range(0, 120, 30):
        assert service.client.post("/v1/predict", json={"texts": sent[start : start + 30]}).status_code == 200
    folder = project.root / "predictions"
    wait_for(lambda: sum(len(pd.read_parquet(p)) for p in folder.glob("*.parquet")) >= 120)
    batch = load_batch(str(folder / "*.parquet"), DriftConfig(), project.root)
    assert sorted(batch["text"]) == sorted(sent)
    assert "label" not in batch.columns  # predictions are never taken for labels
    logged = pd.concat(pd.read_parquet(p) for p in folder.glob("*.parquet"))
    assert set(logged["version"]) == {project.versions[1]} and set(logged["alias"]) == {"champion"}
    assert logged["latency_ms"].gt(0).all() and logged["predicted_label"].notna().all()


def test_sticky_routing_keeps_a_key_on_one_version(service: Service, project: Project) -> None:
    registry = project.registry()
    canary = project.versions[0]
    registry.set_canary(canary, 0.3, run="test", reason="canary")
    wait_for(lambda: service.metric("gradus_model_info", alias="canary") == 1)

    def versions_for(keys: list[str]) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for key in keys:
            for _ in range(3):
                body = service.client.post("/v1/predict", json={"texts": ["card"], "key": key}).json()
                seen.setdefault(key, set()).add(body["model"]["version"])
        return seen

    keys = [f"user-{i}" for i in range(60)]
    first = versions_for(keys)
    assert all(len(v) == 1 for v in first.values())
    on_canary = {k for k, v in first.items() if v == {canary}}
    assert 5 <= len(on_canary) <= 35, len(on_canary)  # about 30 % of 60
    registry.set_canary(canary, 0.6, run="test", reason="wider")
    wait_for(lambda: service.metric("gradus_model_info", alias="canary", weight="0.6") == 1)
    second = versions_for(keys)
    assert all(second[k] == {canary} for k in on_canary)  # raising the weight keeps keys on the canary
    assert len([k for k, v in second.items() if v == {canary}]) > len(on_canary)


def test_shutdown_flushes_the_log_and_exits_cleanly(project: Project) -> None:
    project.set(serving__prediction_log={"uri": "predictions", "format": "jsonl", "flush_rows": 100000,
                                         "flush_seconds": 3600, "buffer_rows": 100000, "mask_pii": True})
    running = start_service(project)
    assert running.client.post("/v1/predict", json={"texts": ["mail me at jane@example.com"]}).status_code == 200
    assert stop_service(running) in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    [log_file] = (project.root / "predictions").glob("*.jsonl")
    [row] = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert row["text"] == "mail me at [EMAIL]" and row["alias"] == "champion"
    assert "Application shutdown complete" in running.output()



def test_a_request_whose_client_left_is_not_computed(project: Project) -> None:
    import socket
    import threading

    project.set(serving__max_batch_size=1, serving__max_wait_ms=0, serving__lanes=1)
    slow = start_service(project, env={"GRADUS_FAULT_DELAY_MS": "600"})
    try:
        busy = threading.Thread(target=lambda: slow.client.post("/v1/predict", json={"texts": ["first"]}))
        busy.start()  # occupies the one lane for 600 ms
        time.sleep(0.1)
        body = json.dumps({"texts": ["nobody waits for this"]}).encode()
        with socket.create_connection(("127.0.0.1", slow.port)) as gone:
            gone.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.2)  # queued behind the busy batch; then the client hangs up
        busy.join()
        wait_for(lambda: slow.metric("gradus_requests_abandoned_total", alias="champion") == 1)
        assert slow.metric("gradus_batch_size_sum", alias="champion") == 1  # only "first" was computed
        assert slow.client.post("/v1/predict", json={"texts": ["after"]}).status_code == 200
    finally:
        stop_service(slow)


def test_a_shadow_version_sees_live_traffic_but_never_answers(service: Service, project: Project) -> None:
    registry = project.registry()
    shadow = project.versions[0]
    registry.set_shadow(shadow, run="test", reason="shadow")
    wait_for(lambda: service.metric("gradus_model_info", alias="shadow", version=shadow) == 1)
    sent = texts(40, offset=900)
    ids = []
    for start in range(0, 40, 8):
        body = service.client.post("/v1/predict", json={"texts": sent[start : start + 8]}).json()
        assert body["model"] == {"version": project.versions[1], "alias": "champion"}
        ids.append(body["request_id"])
    folder = project.root / "predictions"

    def logged() -> pd.DataFrame:
        files = list(folder.glob("*.parquet"))
        return pd.concat(pd.read_parquet(p) for p in files) if files else pd.DataFrame(columns=["alias"])

    wait_for(lambda: (logged()["alias"] == "shadow").sum() >= 40)
    log = logged()
    mirrored = log[log["alias"] == "shadow"]
    assert set(mirrored["request_id"]) == set(ids) and set(mirrored["version"]) == {shadow}
    own = dict(zip(sent, load_version(project.registry(), shadow).predict(sent).labels(), strict=True))
    margin_ok = sum(own[t] == label for t, label in zip(mirrored["text"], mirrored["predicted_label"], strict=True))
    assert margin_ok >= 36  # the shadow's own answers (bf16 may flip a near-tie)
    assert sorted(log[log["alias"] == "champion"]["request_id"].unique()) == sorted(ids)
    registry.set_shadow(None, run="test", reason="done")
    wait_for(lambda: service.metric("gradus_model_info", alias="shadow") == 0)


def test_replay_sends_at_a_rate_and_posts_late_feedback(service: Service, project: Project, tmp_path: Path) -> None:
    import subprocess
    import sys

    rows = pd.read_csv(BANKING77 / "test.csv").head(12)
    labels = {"card_arrival": "card_lost", "top_up_failed": "refund"}
    rows["label"] = [labels.get(c, "balance") for c in rows["category"]]  # labels the tiny models know
    rows[["text", "label"]].to_csv(tmp_path / "traffic.csv", index=False)
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "gradus"), "replay", str(tmp_path / "traffic.csv"),
                           "--rate", "20", "--duration", "2", "--feedback-delay", "0.5", "--url", service.url,
                           "--params", str(project.params), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sent"] == 40 and report["statuses"] == {"200": 40} and report["feedback"] == {"201": 40}
    assert report["answered_by"] == {f"champion {project.versions[1]}": 40}
    assert time.monotonic() - started >= 2.0  # open loop: the schedule, not the answers, sets the pace
    [(frame, _)] = load_source(FeedbackSource(path=str(project.root / "feedback" / "*.jsonl")))
    assert len(frame) == 40 and set(frame["text"]) == set(rows["text"])
    expected = dict(zip(rows["text"], rows["label"], strict=True))
    assert all(expected[t] == label for t, label in zip(frame["text"], frame["label"], strict=True))
