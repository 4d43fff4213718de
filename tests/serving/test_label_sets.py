"""A label-set model (model.task multi_label) served by `gradus serve` over real HTTP: /v1/predict answers the
labels over their stored thresholds, a v2 client library reads the documented tensors, feedback takes a label
list, and the prediction log keeps the sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from gradus.task_types.multi_label import TASK, sigmoid
from tests.serving.conftest import SET_LABELS as LABELS
from tests.serving.conftest import SET_THRESHOLDS as THRESHOLDS
from tests.serving.conftest import Project, start_service, stop_service


def expected_scores(folder_model: Path, texts: list[str]) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(folder_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder_model)
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits
    return sigmoid(logits.numpy())


def test_a_label_set_model_answers_sets_to_v1_and_to_a_v2_client(label_set_project: Project, tmp_path: Path) -> None:
    import tritonclient.http as triton

    texts = ["my card was charged twice, refund it now", "résumé of my account 💳", "hello"]
    scores = expected_scores(tmp_path / "label-set-model", texts)
    wanted = TASK.decode(scores, LABELS, THRESHOLDS)
    assert any(wanted) and not all(len(answer) == len(LABELS) for answer in wanted)  # a real decision
    service = start_service(label_set_project)
    try:
        answer = service.client.post("/v1/predict", json={"texts": texts, "scores": True})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for prediction, labels, row in zip(predictions, wanted, scores, strict=True):
            assert sorted(item["label"] for item in prediction["labels"]) == labels
            ranked = [item["score"] for item in prediction["labels"]]
            assert ranked == sorted(ranked, reverse=True)
            assert set(prediction["scores"]) == set(LABELS)
            np.testing.assert_allclose([prediction["scores"][label] for label in LABELS], row, atol=1e-4)
        plain = service.client.post("/v1/predict", json={"texts": texts[:1]}).json()["predictions"][0]
        assert set(plain) == {"labels"}  # every label's score only when asked

        client = triton.InferenceServerClient(f"127.0.0.1:{service.port}")
        try:
            metadata = client.get_model_metadata("gradus")
            assert [o["name"] for o in metadata["outputs"]] == ["labels", "scores"]
            tensor = triton.InferInput("text", [len(texts)], "BYTES")
            tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=True)
            result = client.infer("gradus", [tensor])
            sets = [json.loads(cell) for cell in result.as_numpy("labels")]
            assert [sorted(s) for s in sets] == wanted
            matrix = result.as_numpy("scores")
            assert matrix.shape == (len(texts), len(LABELS))
            assert result.get_response()["parameters"]["labels"] == LABELS
            np.testing.assert_allclose(matrix, scores, atol=1e-4)
        finally:
            client.close()

        request_id = answer.json()["request_id"]
        stored = service.client.post("/v1/feedback", json={"request_id": request_id, "index": 0,
                                                            "labels": ["refund", "billing"]})
        assert stored.status_code == 201 and stored.json()["label"] == ["billing", "refund"], stored.text
        single = service.client.post("/v1/feedback", json={"text": "refund me", "label": "refund"})
        assert single.status_code == 422 and "labels" in single.json()["detail"]
        unknown = service.client.post("/v1/feedback", json={"text": "refund me", "labels": ["loyalty"]})
        assert unknown.status_code == 422 and "'loyalty'" in unknown.json()["detail"]
        document = service.client.get("/openapi.json").json()
        feedback = document["components"]["schemas"]["FeedbackRequest"]["allOf"][0]
        assert feedback["required"] == ["labels"] and feedback["properties"]["labels"]["items"]["enum"] == LABELS
        for label in wanted[0]:
            assert service.metric("gradus_predictions_total", label=label) >= 1

        root = label_set_project.root
        records = [json.loads(line) for line in (root / "feedback").glob("*.jsonl").__next__().read_text().splitlines()]
        assert records[0]["label"] == ["billing", "refund"] and records[0]["predicted_label"] == wanted[0]
        deadline = time.time() + 10
        logged: list[dict] = []
        while time.time() < deadline and len(logged) < len(texts):
            logged = [json.loads(line) for path in (root / "predictions").rglob("*.jsonl")
                      for line in path.read_text().splitlines()]
            time.sleep(0.2)
        by_text = {row["text"]: row["predicted_label"] for row in logged}
        assert [by_text[text] for text in texts] == wanted
    finally:
        stop_service(service)
