"""The service's contracts with clients no one here wrote: one bad text fails only its own request (under load and
during a canary step), the validate stage's text rules at the edge, the Open Inference Protocol v2 as
`tritonclient.http` speaks it (JSON and binary tensor data), and the OpenAPI document checked by schemathesis."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest

from tests.serving.conftest import Service

POISON = '{"texts": ["\\ud800 hello"]}'  # valid JSON, not valid Unicode: no tokenizer can encode it


def _load(url: str, ordinary: int, poison: int, concurrency: int) -> tuple[list[int], list[tuple[int, dict]]]:
    """`ordinary` good requests and `poison` lone-surrogate ones, interleaved, `concurrency` at a time."""
    bodies = [("good", json.dumps({"texts": [f"I lost my card number {i}", "refund please"]})) for i in range(ordinary)]
    step = max(ordinary // max(poison, 1), 1)
    for n in range(poison):
        bodies.insert(n * (step + 1), ("poison", POISON))
    good: list[int] = []
    bad: list[tuple[int, dict]] = []

    async def run() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for item in bodies:
            queue.put_nowait(item)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async def worker() -> None:
                while not queue.empty():
                    kind, body = queue.get_nowait()
                    response = await client.post("/v1/predict", content=body,
                                                 headers={"content-type": "application/json"})
                    if kind == "good":
                        good.append(response.status_code)
                    else:
                        bad.append((response.status_code, response.json()))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())
    return good, bad


def test_poison_texts_fail_only_their_own_requests_under_load(service: Service) -> None:
    good, bad = _load(service.url, ordinary=1500, poison=100, concurrency=48)
    assert len(good) == 1500 and set(good) == {200}, {code: good.count(code) for code in set(good)}
    assert len(bad) == 100 and {code for code, _ in bad} == {422}
    assert all(body["detail"].startswith("texts[0] refused (text_control_chars): text has control characters or "
                                         "invalid Unicode (U+D800 at 0)") for _, body in bad), bad[0]
    # Client errors are not the model's: no 5xx counted, and the refusals are not attributed to a version.
    assert service.metric("gradus_request_errors_total", status="500") == 0
    assert service.metric("gradus_request_errors_total", route="/v1/predict", status="422", alias="-") == 100
    assert service.metric("gradus_request_errors_total", route="/v1/predict", status="422", alias="champion") == 0
    # Feedback refuses the same text the same way (it used to answer a plain 500).
    refused = service.client.post("/v1/feedback", content='{"text": "\\ud800", "label": "balance"}',
                                  headers={"content-type": "application/json"})
    assert refused.status_code == 422 and "text[0] refused (text_control_chars)" in refused.json()["detail"]


REFUSED = [("", "text_not_blank"), ("   \n ", "text_not_blank"), ("x" * 2001, "text_length"),
           ("card\x00 lost", "text_control_chars"), ("card \ufffd lost", "text_control_chars")]


def test_what_the_validate_stage_quarantines_the_service_refuses_by_the_same_rule(service: Service) -> None:
    from data_checks.suite import default_label_rules, row_checks
    from gradus.config.pipeline import ValidateConfig

    names = {check.name for check in row_checks(ValidateConfig(), default_label_rules(["a"]))}  # the stage's own names
    for text, rule in REFUSED:  # one service for every case (each start costs ~5 s); the case is in each message
        assert rule in names
        answer = service.client.post("/v1/predict", json={"texts": ["a fine text", text]})
        assert answer.status_code == 422 and answer.json()["detail"].startswith(f"texts[1] refused ({rule}): "), \
            (text[:20], answer.text)
        v2 = service.client.post("/v2/models/gradus/infer", json={"inputs": [
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]})
        assert v2.status_code == 422 and v2.json()["error"].startswith(
            f"input 'text' element[0] refused ({rule}): "), (text[:20], v2.text)


def test_a_failing_request_in_a_batch_is_retried_alone_and_the_others_answered() -> None:
    from serving.batching import Job, Slot
    from serving.metrics import Metrics

    class Fussy:
        """Refuses any pass holding the text 'boom' (a fault no edge check catches), else answers."""

        labels, version, backend = ("a", "b"), "vfussy", "fault"

        def predict(self, texts: list[str], batch_size: int = 64) -> object:
            time.sleep(0.05)
            if "boom" in texts:
                raise RuntimeError("cannot run this text")
            return type("P", (), {"probabilities": np.tile([[0.3, 0.7]], (len(texts), 1)).astype(np.float32)})()

    metrics = Metrics()
    slot = Slot("champion", Fussy(), max_batch_size=32, max_wait_ms=50, queue_size=64, metrics=metrics, lanes=1)

    async def run() -> list[object]:
        loop = asyncio.get_running_loop()
        jobs = [Job(texts, loop.create_future(), loop) for texts in (["ok 1"], ["boom"], ["ok 2", "ok 3"])]
        for job in jobs:
            assert slot.submit(job)
        return await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)

    try:
        first, failed, last = asyncio.run(run())
    finally:
        slot.stop()
    assert isinstance(failed, RuntimeError) and "cannot run this text" in str(failed)
    assert first.probabilities.shape == (1, 2) and last.probabilities.shape == (2, 2)
    assert metrics.batch_retries.labels("champion")._value.get() >= 1


def test_poison_during_a_canary_step_moves_neither_versions_error_rate(service: Service) -> None:
    from gradus.release.analysis import CounterWindow, parse_counters

    def scrape() -> dict:
        return parse_counters(service.client.get("/metrics").text)

    registry = service.project.registry()
    canary = service.project.versions[0]
    registry.set_canary(canary, 0.5, run="test", reason="canary")
    deadline = time.monotonic() + 30
    while service.metric("gradus_model_info", alias="canary") != 1:
        assert time.monotonic() < deadline, "the canary was not loaded"
        time.sleep(0.3)
    window = CounterWindow()
    window.observe(scrape())
    good, bad = _load(service.url, ordinary=200, poison=40, concurrency=16)
    window.observe(scrape())
    assert set(good) == {200} and {code for code, _ in bad} == {422}
    champion = registry.aliases().champion
    failed, total = window.errors(canary, ("canary",))
    base_failed, base_total = window.errors(champion, ("champion",))
    assert failed == base_failed == 0 and total > 50 and base_total > 50  # the release check sees no errors


def test_a_v2_client_drives_health_metadata_and_infer_in_both_data_modes(service: Service) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{service.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("gradus")
        assert client.get_server_metadata()["name"] == "gradus"
        metadata = client.get_model_metadata("gradus")
        assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        texts = np.array([b"I lost my card", "r\u00e9sum\u00e9 of my refund \U0001f4b3".encode()], dtype=np.object_)
        for binary in (False, True):  # JSON tensors, then the binary tensor data extension
            tensor = triton.InferInput("text", [2], "BYTES")
            tensor.set_data_from_numpy(texts, binary_data=binary)
            result = client.infer("gradus", [tensor])
            labels = result.as_numpy("label")
            confidence = result.as_numpy("confidence")
            assert labels.shape == (2,) and confidence.shape == (2,) and ((confidence > 0) & (confidence <= 1)).all()
            assert result.get_response()["model_version"] == service.project.versions[1]
        with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
            client.infer("nope", [tensor])
        blank = triton.InferInput("text", [1], "BYTES")
        blank.set_data_from_numpy(np.array([b"  "], dtype=np.object_), binary_data=True)
        with pytest.raises(InferenceServerException, match=r"refused \(text_not_blank\)"):
            client.infer("gradus", [blank])
    finally:
        client.close()
    # The body tritonclient sends carries no content type: JSON is read all the same, errors are {"error": ...}.
    plain = httpx.post(f"{service.url}/v2/models/gradus/infer", content=json.dumps({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}), timeout=30)
    assert plain.status_code == 200 and plain.json()["outputs"][0]["shape"] == [1]
    broken = httpx.post(f"{service.url}/v2/models/gradus/infer", content=b"{not json", timeout=30)
    assert broken.status_code == 400 and set(broken.json()) == {"error"}
    missing = httpx.get(f"{service.url}/v2/models/nope", timeout=30)
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


def test_the_openapi_document_holds_for_every_generated_request(service: Service) -> None:
    """schemathesis with all its checks against the running service: every status and body as documented,
    no 5xx."""
    import subprocess
    import sys
    from pathlib import Path

    report = service.project.root / "schemathesis.txt"
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{service.url}/openapi.json",
               "--checks", "all", "--max-examples", "15", "--seed", "1", "--no-color",
               "--exclude-path", "/admin/reload", "--request-timeout", "30"]
    # In the test's project folder: schemathesis keeps a cache (.schemathesis/) in its working directory.
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=service.project.root)
    report.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "No issues found" in done.stdout or " passed" in done.stdout, done.stdout[-3000:]
    assert service.metric("gradus_request_errors_total", status="500") == 0
