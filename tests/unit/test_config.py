"""params.yaml is typed, frozen and strict; overrides are validated the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gradus.config.editing import write_overrides
from gradus.config.loading import apply_overrides
from gradus.config.params import Params, load_params
from gradus.errors import ConfigError
from tests.conftest import ROOT


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def project_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load_and_are_frozen() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.train.epochs == "auto" and params.data.sources[0].kind == "demo"
    with pytest.raises(ValueError, match="frozen"):
        params.train.epochs = 1  # type: ignore[misc]


def test_project_params_file_spells_out_every_key() -> None:
    """params.yaml is the documentation of every tunable: no key may exist only as a code default."""
    assert load_params(ROOT / "params.yaml").as_dict() == Params.model_validate(project_raw()).as_dict()
    raw = project_raw()
    for section, value in Params().as_dict().items():
        if isinstance(value, dict):
            assert set(raw[section]) == set(value), section


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path: Path) -> None:
    raw = project_raw()
    raw["train"]["epoch"] = 2
    with pytest.raises(ConfigError) as error:
        load_params(write(tmp_path, raw))
    message = str(error.value)
    assert "unknown key 'train.epoch'" in message and "allowed:" in message and "epochs" in message
    assert "\n" not in message


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    raw = project_raw()
    raw["train"]["batch_size"] = "lots"
    with pytest.raises(ConfigError, match=r"'train.batch_size': input should be a valid integer.*'lots'"):
        load_params(write(tmp_path, raw))


def test_out_of_range_value_is_rejected(tmp_path: Path) -> None:
    raw = project_raw()
    raw["validate"]["max_quarantine_share"] = 1.5
    with pytest.raises(ConfigError, match=r"validate\.max_quarantine_share"):
        load_params(write(tmp_path, raw))


def test_source_kind_errors_name_the_list_item(tmp_path: Path) -> None:
    raw = project_raw()
    raw["data"]["sources"] = [{"kind": "file"}]
    with pytest.raises(ConfigError, match=r"missing key 'data.sources.0.path'"):
        load_params(write(tmp_path, raw))


def test_dotted_overrides_are_typed_and_validated() -> None:
    params = load_params(ROOT / "params.yaml", ["train.epochs=1", "train.learning_rate=3e-5",
                                                 "data.sources.0.rows=500", "model.base=/tmp/x"])
    assert params.train.epochs == 1 and params.train.learning_rate == pytest.approx(3e-5)
    assert params.data.sources[0].rows == 500 and params.model.base == "/tmp/x"
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epohcs'"):
        load_params(ROOT / "params.yaml", ["train.epohcs=1"])
    with pytest.raises(ConfigError, match=r"'train\.epochs'"):
        load_params(ROOT / "params.yaml", ["train.epochs=abc"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_params(ROOT / "params.yaml", ["train.epochs"])
    with pytest.raises(ConfigError, match="needs an index below 1"):
        load_params(ROOT / "params.yaml", ["data.sources.3.rows=5"])


def test_overrides_do_not_mutate_their_input() -> None:
    raw = project_raw()
    apply_overrides(raw, ["train.epochs=9"])
    assert raw == project_raw()


def test_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)


def test_write_overrides_keeps_comments_and_refuses_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    changes = write_overrides(path, ["train.epochs=1", "train.seed=42"])
    assert changes == {"train.epochs": {"old": "auto", "new": 1}}
    text = path.read_text()
    assert "# gradus parameters" in text and load_params(path).train.epochs == 1
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        write_overrides(path, ["train.epochs=-1"])
    assert path.read_text() == text


def test_write_overrides_keeps_every_byte_outside_the_changed_keys(tmp_path: Path) -> None:
    """A round trip keeps comments, `null`, key order and indentation: only the changed lines differ."""
    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    path.write_text(original)
    source = {"kind": "file", "path": "data/feedback/*.jsonl", "text_column": "text", "label_column": "label"}
    write_overrides(path, ["gate.margin=0.03", "model.revision=abc123"], [source])
    before, after = original.splitlines(), path.read_text().splitlines()
    added = ["    - kind: file", "      path: data/feedback/*.jsonl", "      text_column: text",
             "      label_column: label"]
    rest = [line for line in after if line not in added]
    changed = [new for old, new in zip(before, rest, strict=True) if old != new]
    assert changed == [
        "  revision: abc123           # hub revision to pin (hub ids only)",
        "  margin: 0.03               # pass if the CI lower bound of (new - champion) macro-F1 >= -margin"]
    assert after[after.index("    - kind: demo") + 3:][:4] == added
    assert "  allowed_labels: null       # a list fixes the label set" in path.read_text()
    assert len(after) == len(before) + 4


def test_the_stage_list_is_dvc_yamls_in_order() -> None:
    from gradus.stages import STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGES
    assert all(stage["cmd"] == f"python -m tasks {name}" for name, stage in stages.items())


@pytest.mark.parametrize(("field", "value"), [
    ("epochs", 0), ("epochs", -1), ("learning_rate", 1.0), ("learning_rate", 0), ("batch_size", 0),
    ("max_length", 4), ("max_length", 1024), ("epochs", 2.5), ("learning_rate", 3e-5), ("max_length", 128),
    ("batch_size", 16), ("seed", 7)])
def test_ui_overrides_accept_exactly_what_params_accept(field: str, value: float) -> None:
    """The Prefect form's bounds come from TrainConfig: a value is refused by both or by neither."""
    from pydantic import ValidationError

    from flows.training import TrainingOverrides
    from gradus.config.pipeline import TrainConfig

    def accepted(model: type) -> bool:
        try:
            model(**{field: value})
        except ValidationError:
            return False
        return True

    assert accepted(TrainingOverrides) == accepted(TrainConfig)
