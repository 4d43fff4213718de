"""Pipeline stages: one module each, plain functions taking Params; dvc.yaml runs `python -m tasks STAGE`
(tasks/runner.py holds the stage list and the one runner)."""
