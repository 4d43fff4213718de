"""Editing a params file: a run workspace's params.yaml gets the run's overrides and added sources, written
with ruamel.yaml's round trip so that everything else stays byte for byte (comments, key order, nulls)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradus.config.loading import apply_overrides, parse_override, read_params_file, set_dotted
from gradus.config.params import validate_params


def write_overrides(path: str | Path, overrides: list[str] | tuple[str, ...],
                    add_sources: list[dict[str, Any]] | tuple[dict[str, Any], ...] = ()) -> dict[str, dict[str, Any]]:
    """Apply validated dotted overrides (and data sources to append) to a params file in place, as `dvc exp run
    -S` does; flows call it on a run workspace's copy only, never on the project's params.yaml.

    Returns {key: {"old": ..., "new": ...}} for the keys that changed. Nothing is written if any override is
    invalid; what is written keeps everything else byte for byte (comments, null, key order, indentation).
    """
    path = Path(path)
    parsed = [(text, *parse_override(text)) for text in overrides]
    before = read_params_file(path)
    after = apply_overrides(before, overrides)
    if add_sources:
        data = after.setdefault("data", {})
        data["sources"] = [*data.get("sources", []), *add_sources]
    validate_params(after, str(path))
    changes = {}
    for _, keys, value in parsed:
        if (old := _lookup(before, keys)) != value:
            changes[".".join(keys)] = {"old": old, "new": value}

    def edit(document: Any) -> None:
        for text, keys, value in parsed:
            set_dotted(document, keys, value, text)
        if add_sources:
            document["data"]["sources"].extend(add_sources)

    if changes or add_sources:
        _rewrite(path, edit)
    return changes


def round_trip_yaml() -> Any:
    """ruamel.yaml in round-trip mode, set to write params.yaml as the project writes it: mappings indented by 2,
    list items by 4 with the dash at 2, and `null` spelled out (ruamel's default leaves the value empty)."""
    from ruamel.yaml import YAML

    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096  # never re-wrap a long line a person wrote
    yaml_rt.indent(mapping=2, sequence=4, offset=2)
    yaml_rt.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml_rt


def set_values(path: str | Path, values: dict[str, Any]) -> None:
    """Write dotted keys (any YAML value: a scalar, list or mapping) into a params file, unvalidated — for
    files being prepared (tests, templates); runs use `write_overrides`."""
    def edit(document: Any) -> None:
        for dotted, value in values.items():
            set_dotted(document, dotted.split("."), value)

    _rewrite(Path(path), edit)


def _rewrite(path: Path, edit: Callable[[Any], None]) -> None:
    """Load a params file as a round-trip document, change it in place, write it back: what is not edited stays
    byte for byte."""
    yaml_rt = round_trip_yaml()
    document = yaml_rt.load(path.read_text(encoding="utf-8"))
    edit(document)
    with path.open("w", encoding="utf-8") as handle:
        yaml_rt.dump(document, handle)


def _lookup(raw: Any, keys: list[str]) -> Any:
    node = raw
    for key in keys:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node
