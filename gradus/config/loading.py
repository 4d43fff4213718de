"""Reading params.yaml and its overrides: a file that is not a mapping, a duplicate key, an override that
names no key, a value of the wrong type — each one clear line naming the key (and line) at fault."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gradus.config.pipeline import (
    PARAMS_FILE,
    SOURCE_KINDS,
    DemoSource,
    FeedbackSource,
    FileSource,
    HFSource,
    S3Source,
    StageParams,
)
from gradus.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `train.epochs=1` into (['train', 'epochs'], 1); values are YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example train.epochs=1")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of raw with each dotted override set (list items by index: data.sources.0.rows=500)."""
    import copy

    result = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(result, keys, value, text)
    return result


def set_dotted(document: Any, keys: list[str], value: Any, text: str | None = None) -> None:
    """Set one dotted key in a loaded YAML document (plain dicts/lists or ruamel's round-trip ones): the one
    writer of dotted keys, used by overrides, a run workspace's params.yaml and the tests. Missing sections
    are created; list items are addressed by index. `text`: the override as typed, for the error."""
    text = text or ".".join(keys)
    node: Any = document
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, keys[: depth + 1], text)
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, keys, text)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        parent = ".".join(keys[:-1])
        raise ConfigError(f"override {text!r}: '{parent}' is not a section")


def _child(node: Any, key: str, path: list[str], text: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, path, text)]
    if not isinstance(node, dict):
        parent = ".".join(path[:-1])
        raise ConfigError(f"override {text!r}: '{parent}' is not a section")
    return node.setdefault(key, {})


def _index(node: list[Any], key: str, path: list[str], text: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        joined = ".".join(path)
        raise ConfigError(f"override {text!r}: '{joined}' needs an index below {len(node)}")
    return int(key)


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read params.yaml as a plain dict, with a clear error if it is missing, not a mapping, or holds a key
    twice (ruamel.yaml refuses duplicates, as DVC's own reader of the file does)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    text = path.read_text(encoding="utf-8")
    try:
        raw = YAML(typ="safe", pure=True).load(text)
    except DuplicateKeyError:
        raise ConfigError(f"{path}: {duplicate_key(text)}") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; start from the project's params.yaml (every section is "
                          "documented there)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (paths, data, train, ...)")
    return raw


def duplicate_key(text: str) -> str:
    """Which key a document holds twice, dotted from the top, and on which lines: ruamel's error names only the
    mapping and the second line, so the node tree (composed, not constructed: no refusal there) is walked."""
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    def walk(node: Any, path: list[str]) -> str | None:
        if isinstance(node, MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in seen:
                    return (f"duplicate key '{'.'.join([*path, key])}' on lines {seen[key]} and {line}; keep one "
                            "(YAML would silently use the last)")
                seen[key] = line
                if found := walk(value_node, [*path, key]):
                    return found
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                if found := walk(item, [*path, str(index)]):
                    return found
        return None

    return walk(YAML(typ="safe", pure=True).compose(text), []) or "a key is written twice; keep one"


def validate(model: type[Model], raw: dict[str, Any], origin: str = PARAMS_FILE) -> Model:
    """Validate a params dict with `model`, turning pydantic's errors into one line per key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A bad source item also makes pydantic say the list is too short: only the item's own error matters.
        items = {tuple(e["loc"][:2]) for e in errors if len(e["loc"]) > 2}
        errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in items)]
        raise ConfigError(f"{origin}: " + "; ".join(_describe(e, model) for e in errors)) from None


def load_stage_params(path: str | Path = PARAMS_FILE, overrides: list[str] | tuple[str, ...] = ()) -> StageParams:
    """The sections a pipeline stage reads, with dotted overrides applied, validated."""
    return validate(StageParams, apply_overrides(read_params_file(path), overrides), str(path))


def _describe(error: Any, top: type[BaseModel]) -> str:
    # Drop the discriminator tag pydantic puts in union locations (data.sources.0.file.path -> ...0.path).
    loc = [str(p) for p in error["loc"] if p not in SOURCE_KINDS]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' ({_allowed_keys(loc, error['loc'], top)})"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    if error["type"] == "too_short" and loc == ["data", "sources"]:
        return f"'{key}' needs at least one source (kinds: {', '.join(SOURCE_KINDS)})"
    if error["type"] == "value_error":  # a rule across keys of one section: its message names the keys
        message = error["msg"].removeprefix("Value error, ")
        field = re.match(r"'(\w+)' (.*)", message)
        return f"'{key}.{field[1]}': {field[2]}" if field else f"'{key}': {message}"
    return f"'{key}': {error['msg'].lower()} (got {error.get('input')!r})"


def _allowed_keys(loc: list[str], raw_loc: tuple[Any, ...], top: type[BaseModel]) -> str:
    kind = next((p for p in raw_loc if p in SOURCE_KINDS), None)
    if len(loc) == 4 and loc[:2] == ["data", "sources"] and kind:  # a key of one source item
        model: Any = {cls.model_fields["kind"].default: cls for cls in
                      (DemoSource, FileSource, FeedbackSource, S3Source, HFSource)}[kind]
        return "allowed for kind " + kind + ": " + ", ".join(sorted(model.model_fields))
    model = top
    for part in loc[:-1]:
        field = _field(model, part)
        if field is None:
            return "check the spelling"
        model = field.annotation
    names = sorted((f.alias or n) for n, f in model.model_fields.items()) if hasattr(model, "model_fields") else []
    return "allowed: " + ", ".join(names) if names else "check the spelling"


def _field(model: Any, name: str) -> Any:
    fields = getattr(model, "model_fields", {})
    for key, field in fields.items():
        if name in (key, field.alias):
            return field
    return None
