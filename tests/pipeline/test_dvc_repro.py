"""The real pipeline under real DVC in a real git repository: outputs, caching, experiments, push."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gradus.config.pipeline import TrainConfig
from gradus.probe import C_GRID
from tests.conftest import set_params, sh

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_repro_builds_every_output_and_caches(project_repo: Path) -> None:
    # The defaults' probe baseline, training method (LP-FT) and ONNX variants, which the other tests' toy runs turn off.
    default_method = TrainConfig.model_fields["method"].default
    set_params(project_repo / "params.yaml", {"evaluate.probe": True, "train.method": default_method,
                                              "compress.enabled": True})
    first = sh([*DVC, "repro"], project_repo)
    assert stages_run(first.stdout) == ["ingest", "validate", "split", "train", "evaluate", "compress", "gate"]
    params = yaml.safe_load((project_repo / "params.yaml").read_text())
    paths = {key: project_repo / value for key, value in params["paths"].items()}
    for key in ("raw", "raw_manifest", "validated", "quarantine", "validation_report", "train_summary",
                "metrics", "per_class", "confusion", "calibration", "pr_curves", "slices", "behavioral", "predictions",
                "gate_report", "gate_markdown", "gate_metrics"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    model = paths["model"]
    assert (model / "model.safetensors").is_file()
    assert not list(model.glob("*.bin")) and not list(model.glob("*.pt"))
    assert json.loads((model / "labels.json").read_text())["labels"]
    lineage = json.loads((model / "training_summary.json").read_text())
    assert lineage["base_model_revision"].startswith("sha256:") and lineage["device"] == "cpu"
    assert lineage["method"] == default_method == "lp_ft" and lineage["probe"]["C"] in C_GRID
    assert lineage["finetuned_val_macro_f1"] == lineage["val_macro_f1"] and "finetuning_beat_probe" in lineage
    numeric = json.loads(paths["train_summary"].read_text())
    assert numeric["steps"] == lineage["steps"] and all(isinstance(v, int | float) for v in numeric.values())

    validation = json.loads(paths["validation_report"].read_text())
    quarantined = paths["quarantine"].read_text().splitlines()
    assert validation["rows_in"] == validation["rows_kept"] + validation["rows_quarantined"]
    assert validation["rows_quarantined"] == len(quarantined) > 0
    assert all(json.loads(line)["reasons"] for line in quarantined)

    metrics = json.loads(paths["metrics"].read_text())
    labels = json.loads((model / "labels.json").read_text())["labels"]
    assert metrics["accuracy"] > 2.0 / len(labels), metrics  # well above chance for a 2-layer toy model
    assert metrics["accuracy"] > metrics["majority_class_accuracy"]
    confusion = pd.read_csv(paths["confusion"])
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == metrics["test_rows"]

    plots = json.loads(sh([*DVC, "plots", "show", "--json"], project_repo).stdout)
    shown = json.dumps(plots)
    assert "reports/training/plots/metrics" in shown and "eval/macro_f1" in shown and "confusion" in shown
    assert "reports/calibration.csv" in shown and "reports/pr_curves.csv" in shown

    # Evaluation extras: calibration, latency, slices, behavioral checks; the gate's verdict as a DVC metric.
    assert 0 <= metrics["ece"] <= 1 and metrics["latency"]["batch1_p95_ms"] >= metrics["latency"]["batch1_p50_ms"] > 0
    slices = json.loads(paths["slices"].read_text())
    assert sum(s["rows"] for s in slices["text_length_chars"].values()) == metrics["test_rows"]
    assert sum(s["rows"] for s in slices["source"].values()) == metrics["test_rows"]
    gate = json.loads(paths["gate_report"].read_text())
    assert gate["mode"] == "first_model" and gate["registry"]["alias_generation"] == 0
    gate_numbers = json.loads(sh([*DVC, "metrics", "show", "--json"], project_repo).stdout)
    assert "reports/gate_metrics.json" in json.dumps(gate_numbers)
    # The frozen-encoder probe beside TF-IDF: in metrics.json, so in `dvc metrics show` (and `dvc exp show`).
    probe = metrics["baseline_probe"]
    assert 0 <= probe["accuracy"] <= 1 and probe["C"] in C_GRID and probe["pooling"] == "mean" and probe["seconds"] > 0
    assert "baseline_probe.accuracy" in json.dumps(gate_numbers) or '"baseline_probe"' in json.dumps(gate_numbers)
    assert gate["challenger"]["gain_over_probe"] == round(metrics["accuracy"] - probe["accuracy"], 6)

    lock = yaml.safe_load((project_repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"ingest", "validate", "split", "train", "evaluate", "compress", "gate"}
    compression = json.loads(paths["compression_report"].read_text())
    assert set(compression["variants"]) == {"onnx", "onnx-int8"}
    for name, variant in compression["variants"].items():
        assert (paths["compressed"] / variant["file"]).stat().st_size == variant["bytes"], name
    assert compression["variants"]["onnx"]["agreement"] == 1.0  # the same weights in another runtime

    # Only the gate reruns (always_changed: the champion lives in the registry, outside DVC's view).
    second = sh([*DVC, "repro"], project_repo)
    assert stages_run(second.stdout) == ["gate"], second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout

    set_params(project_repo / "params.yaml", {"train.learning_rate": 0.003})
    third = sh([*DVC, "repro"], project_repo)
    assert stages_run(third.stdout) == ["train", "evaluate", "compress", "gate"], third.stdout

    # Re-ingesting unchanged sources (what the flow does for S3 / hub sources) gives a byte-identical
    # snapshot, so DVC reruns nothing downstream.
    snapshot = paths["raw"].read_bytes()
    forced = sh([*DVC, "repro", "--force", "--single-item", "ingest"], project_repo)
    assert stages_run(forced.stdout) == ["ingest"] and paths["raw"].read_bytes() == snapshot
    assert stages_run(sh([*DVC, "repro"], project_repo).stdout) == ["gate"]

    sh([*DVC, "push"], project_repo)
    status = sh([*DVC, "status", "--cloud"], project_repo)
    assert "new:" not in status.stdout, status.stdout


def test_bad_params_key_fails_the_stage_with_the_key_named(project_repo: Path) -> None:
    params = project_repo / "params.yaml"
    params.write_text(params.read_text().replace("max_length:", "max_lenght:"))
    failed = sh([*DVC, "repro", "ingest"], project_repo, check=False)
    assert failed.returncode != 0
    assert "unknown key 'train.max_lenght'" in failed.stdout + failed.stderr
