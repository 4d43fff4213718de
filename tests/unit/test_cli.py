"""The `gradus` console script as a user meets it: help texts, exit codes, one-line errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from typer.testing import CliRunner

from cli.main import app
from gradus.demo import generate
from gradus.stages import STAGES
from tests.conftest import ROOT, sh

GRADUS = str(Path(sys.executable).parent / "gradus")


def commands(group: Any = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of `gradus`, with its words (`("models", "list")`), groups included."""
    group = group or typer.main.get_command(app)
    found = [(path, group)]
    for name, command in getattr(group, "commands", {}).items():
        found += commands(command, (*path, name))
    return found


def test_every_command_has_help_naming_its_options_and_arguments() -> None:
    """The help a person reads lists what the command takes: each option, each argument, each subcommand."""
    runner = CliRunner()
    seen = commands()
    assert len(seen) > 25 and ("models", "promote") in {words for words, _ in seen}
    for words, command in seen:
        done = runner.invoke(app, [*words, "--help"], terminal_width=200)
        assert done.exit_code == 0 and "Usage:" in done.output, (words, done.output)
        for param in command.params:
            shown = param.opts[0] if param.param_type_name == "option" else param.name
            assert re.search(rf"(?<![\w-]){shown}\b", done.output), f"gradus {' '.join(words)} --help lacks {shown}"
        for name in getattr(command, "commands", {}):
            assert name in done.output, f"gradus {' '.join(words)} --help does not list {name}"


def test_the_stage_help_names_every_stage_the_runner_runs() -> None:
    done = CliRunner().invoke(app, ["stage", "--help"], terminal_width=200)
    assert all(stage in done.output for stage in STAGES), done.output


def test_an_unknown_option_or_command_exits_2_naming_it() -> None:
    runner = CliRunner()
    for words, command in commands()[1:]:
        if getattr(command, "commands", None):
            continue
        done = runner.invoke(app, [*words, "--no-such-option"])
        assert done.exit_code == 2 and "--no-such-option" in done.output, (words, done.output)
    done = runner.invoke(app, ["modles"])
    assert done.exit_code == 2 and "modles" in done.output


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
