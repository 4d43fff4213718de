"""The `gradus` console script as a user meets it: help texts, exit codes, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from gradus.demo import generate
from tests.conftest import ROOT, sh

GRADUS = str(Path(sys.executable).parent / "gradus")


def test_help_lists_every_command() -> None:
    out = sh([GRADUS, "--help"], ROOT).stdout
    for command in ("run", "stage", "params", "demo-data", "version"):
        assert command in out


@pytest.mark.parametrize("command", [["run"], ["stage"], ["params", "check"], ["params", "show"], ["demo-data"]])
def test_each_subcommand_has_help(command: list[str]) -> None:
    out = sh([GRADUS, *command, "--help"], ROOT).stdout
    assert "Usage:" in out and len(out.splitlines()) > 4


def test_bad_key_is_one_line_naming_it(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("  min_epochs: 3", "  min_epochs: 3\n  epoch: 3"))
    done = sh([GRADUS, "params", "check", "--params", str(params)], ROOT, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'train.epoch'" in lines[0] and str(params) in lines[0]


def test_params_check_accepts_the_project_file_and_overrides() -> None:
    assert "ok" in sh([GRADUS, "params", "check", "--set", "train.epochs=1"], ROOT).stdout
    bad = sh([GRADUS, "params", "check", "--set", "train.epochs=zero"], ROOT, check=False)
    assert bad.returncode == 2 and "'train.epochs'" in bad.stderr


def test_demo_data_writes_the_generated_rows(tmp_path: Path) -> None:
    out = tmp_path / "demo.csv"
    sh([GRADUS, "demo-data", str(out), "--rows", "500", "--seed", "3"], ROOT)
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    expected = generate(500, 3).fillna("")
    assert written["text"].tolist() == expected["text"].tolist()
    assert written["label"].tolist() == expected["label"].tolist()


def test_unknown_stage_is_refused() -> None:
    done = sh([GRADUS, "stage", "deploy"], ROOT, check=False)
    assert done.returncode == 2 and "unknown stage 'deploy'" in done.stderr
