"""The names of the pipeline's stages, in one place: the stage runner, the flow, the CLI's help and the
serving image (which carries no tasks/) all read them."""

from __future__ import annotations

# The pipeline's stages in DAG order; dvc.yaml has one stage of each name, running `python -m tasks NAME`.
STAGES = ("ingest", "validate", "split", "train", "evaluate", "compress", "gate")
