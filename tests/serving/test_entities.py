"""An entity model (model.task token_classification) served by `gradus serve` over real HTTP: /v1/predict answers
entities with character offsets into the text as sent (emoji, combining accents and texts longer than one window
included), a v2 client library reads the documented tensor, feedback takes corrected spans and refuses spans that
do not fit the text, and the prediction log keeps the spans."""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path

import numpy as np

from gradus.modeling import load_classifier
from gradus.task_types.token_classification import TASK
from tests.serving.conftest import Project, start_service, stop_service

TEXTS = ["i paid €20 at tesco yesterday",
         "💳 charged £35 twice by zoë's bakery 🙃 please refund",
         unicodedata.normalize("NFD", "café crème at amélie's, 4,50 € on the 3rd"),  # combining accents
         # Longer than a 16-token window: read in overlapping windows, offsets still into the whole text
         "hello there, on monday tesco took 300 dollars and then amazon took another 40 pounds from my card "
         "ending 4242, and on tuesday uber charged me €12.50 for a ride i never took, so please look into it"]


def test_an_entity_model_answers_spans_to_v1_and_to_a_v2_client(entity_project: Project, tmp_path: Path) -> None:
    import tritonclient.http as triton

    local = load_classifier(tmp_path / "entity-model", "cpu", bf16=False)
    assert local.task == TASK.name and local.stride == 4 and local.max_length == 16
    wanted = local.predict(TEXTS, 8).answers()
    assert sum(map(len, wanted)) >= 4  # the random head finds entities: the merging and offsets are exercised
    windows = local.predict(TEXTS[-1:], 8).probabilities[0].windows
    assert len(windows) > 1  # the long text is read in several windows
    service = start_service(entity_project)
    try:
        answer = service.client.post("/v1/predict", json={"texts": TEXTS})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for text, prediction, expected in zip(TEXTS, predictions, wanted, strict=True):
            assert set(prediction) == {"entities"}
            assert [(e["type"], e["start"], e["end"]) for e in prediction["entities"]] == [
                (e["type"], e["start"], e["end"]) for e in expected]
            for entity in prediction["entities"]:
                # Offsets are Python string indices (code points) into the text as sent, never into a normalised
                # or re-encoded copy: the surface text is the text at them, whatever the characters.
                assert text[entity["start"]:entity["end"]] == entity["text"] and entity["type"] in {
                    "amount", "merchant"}
                assert 0 < entity["score"] <= 1
                assert not text[entity["start"]].isspace() and not text[entity["end"] - 1].isspace()
                if entity["end"] < len(text):  # a span never stops inside a word's combining marks
                    assert not unicodedata.combining(text[entity["end"]])

        client = triton.InferenceServerClient(f"127.0.0.1:{service.port}")
        try:
            metadata = client.get_model_metadata("gradus")
            assert [o["name"] for o in metadata["outputs"]] == ["entities"]
            tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
            tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=True)
            result = client.infer("gradus", [tensor])
            cells = [json.loads(cell) for cell in result.as_numpy("entities")]
            assert [[(e["type"], e["start"], e["end"]) for e in cell] for cell in cells] == [
                [(e["type"], e["start"], e["end"]) for e in expected] for expected in wanted]
            assert result.get_response()["parameters"]["entity_types"] == ["amount", "merchant"]
        finally:
            client.close()

        request_id = answer.json()["request_id"]
        right = [{"start": 7, "end": 10, "type": "amount"}, {"start": 14, "end": 19, "type": "merchant"}]
        stored = service.client.post("/v1/feedback", json={"request_id": request_id, "index": 0, "entities": right})
        assert stored.status_code == 201 and stored.json()["label"] == right, stored.text
        outside = service.client.post("/v1/feedback", json={"request_id": request_id, "index": 0,
                                                             "entities": [{"start": 20, "end": 99, "type": "amount"}]})
        assert outside.status_code == 422 and "outside the text" in outside.json()["detail"]
        overlapping = service.client.post("/v1/feedback", json={"text": TEXTS[0], "entities": [
            {"start": 7, "end": 13, "type": "amount"}, {"start": 10, "end": 19, "type": "merchant"}]})
        assert overlapping.status_code == 422 and "overlap" in overlapping.json()["detail"]
        unknown = service.client.post("/v1/feedback", json={"text": TEXTS[0], "entities": [
            {"start": 14, "end": 19, "type": "shop"}]})
        assert unknown.status_code == 422 and "'shop'" in unknown.json()["detail"]
        as_label = service.client.post("/v1/feedback", json={"text": TEXTS[0], "label": "amount"})
        assert as_label.status_code == 422 and "entities" in as_label.json()["detail"]
        document = service.client.get("/openapi.json").json()
        feedback = document["components"]["schemas"]["FeedbackRequest"]["allOf"][0]
        assert feedback["required"] == ["entities"]
        assert feedback["properties"]["entities"]["items"]["properties"]["type"]["enum"] == ["amount", "merchant"]
        assert "EntityPrediction" in document["components"]["schemas"]
        for kind in {e["type"] for answer in wanted for e in answer}:
            assert service.metric("gradus_predictions_total", label=kind) >= 1

        root = entity_project.root
        records = [json.loads(line) for line in next((root / "feedback").glob("*.jsonl")).read_text().splitlines()]
        assert len(records) == 1 and records[0]["label"] == right
        assert [(e["type"], e["start"]) for e in records[0]["predicted_label"]] == [
            (e["type"], e["start"]) for e in wanted[0]]
        deadline = time.time() + 10
        logged: list[dict] = []
        while time.time() < deadline and len(logged) < 2 * len(TEXTS):
            logged = [json.loads(line) for path in (root / "predictions").rglob("*.jsonl")
                      for line in path.read_text().splitlines()]
            time.sleep(0.2)
        by_text = {row["text"]: row["predicted_label"] for row in logged}
        assert [[(e["type"], e["start"], e["end"]) for e in by_text[text]] for text in TEXTS] == [
            [(e["type"], e["start"], e["end"]) for e in expected] for expected in wanted]
    finally:
        stop_service(service)
