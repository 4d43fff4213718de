"""Pipeline stages: one module each, plain functions taking StageParams; dvc.yaml runs `python -m tasks STAGE`
(tasks/runner.py holds the stage list and the one runner)."""
