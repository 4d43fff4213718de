"""Pipeline stages: one module each, plain functions taking Params; dvc.yaml runs `python -m tasks STAGE`."""

STAGES = ("ingest", "validate", "split", "train", "evaluate", "gate")
