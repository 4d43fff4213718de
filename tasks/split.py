"""Split stage: stratified, seeded train/val/test split with no normalised text in two splits (how a task type
stratifies: its `split`, gradus/stratify.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from gradus.config.pipeline import StageParams
from gradus.task_types.seam import task_type

SPLITS = ("train", "val", "test")


def run(params: StageParams) -> dict[str, Any]:
    """Write train/val/test Parquet files into paths.splits."""
    frame = pd.read_parquet(params.paths.validated)
    split = task_type(params.model.task).split(frame, params.split)
    out = Path(params.paths.splits)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in SPLITS:
        part = frame.loc[split == name].reset_index(drop=True)
        part.to_parquet(out / f"{name}.parquet", index=False, compression="zstd")
        counts[name] = len(part)
    return counts
