"""The data catalogue: labeled sources that flows add to the training data by design (a drift batch that is
kept), one small YAML file each in paths.catalogue, read by ingest after params.yaml's data.sources.

Why files in a folder and not params.yaml: data that accumulates is a decision a person can read, review, commit
or delete (one file, one source, with who added it, when and why), while params.yaml stays what its owner wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from gradus.config.pipeline import Source
from gradus.errors import ConfigError

ENTRY_PATTERN = "*.yaml"
_SOURCE = TypeAdapter(Source)


@dataclass(frozen=True)
class CatalogueEntry:
    """One kept source: where it is, and who added it, when and why."""

    file: str
    source: Any
    added_at: str
    added_by: str
    reason: str

    def location(self) -> str:
        return source_location(self.source)

    def summary(self) -> dict[str, Any]:
        """What lineage and `gradus status` show of the entry."""
        return {"file": self.file, "kind": self.source.kind, "location": self.location(),
                "added_at": self.added_at, "added_by": self.added_by, "reason": self.reason}


def source_location(source: Any) -> str:
    """A source's file, glob or prefix (the key by which it is added once)."""
    return str(getattr(source, "path", None) or getattr(source, "uri", None) or getattr(source, "name", None) or "")


def source_for(location: str, text_column: str, label_column: str) -> dict[str, Any]:
    """A data source for a file, glob or s3:// prefix of labeled rows."""
    if location.startswith("s3://"):
        return {"kind": "s3", "uri": location, "text_column": text_column, "label_column": label_column}
    return {"kind": "file", "path": location, "text_column": text_column, "label_column": label_column}


def read_catalogue(folder: Path) -> list[CatalogueEntry]:
    """Every entry, in file-name order (names start with the time they were added); a broken file is an error
    naming it and the fix, never a silently smaller training set."""
    entries = []
    for file in sorted(folder.glob(ENTRY_PATTERN)) if folder.is_dir() else []:
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or "source" not in raw:
                raise ValueError("expected a mapping with a 'source' key (and added_at, added_by, reason)")
            source = _SOURCE.validate_python(raw["source"])
        except (yaml.YAMLError, ValueError, ValidationError) as exc:
            detail = str(exc).replace("\n", " ")
            raise ConfigError(f"{file}: not a valid data catalogue entry ({detail}); fix the file or delete it to "
                              "stop training on that source") from None
        entries.append(CatalogueEntry(str(file), source, str(raw.get("added_at", "")), str(raw.get("added_by", "")),
                                      str(raw.get("reason", ""))))
    return entries


def _slug(location: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", location).strip("-")[-60:] or "source"


def add_to_catalogue(folder: Path, locations: list[str], text_column: str, label_column: str, added_by: str,
                     reason: str, known: set[str] = frozenset()) -> list[Path]:
    """Write one entry per location not yet in the catalogue nor in `known` (params.yaml's sources); returns the
    files written. Create-only: an existing entry is never rewritten."""
    present = set(known) | {entry.location() for entry in read_catalogue(folder)}
    added = []
    for location in dict.fromkeys(locations):
        if location in present:
            continue
        source = source_for(location, text_column, label_column)
        _SOURCE.validate_python(source)
        now = datetime.now(UTC)
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"{now:%Y%m%dT%H%M%S%fZ}-{_slug(location)}.yaml"
        header = ("# A source kept in the training data (gradus data catalogue: every run's ingest reads it after\n"
                  "# params.yaml's data.sources). Review and commit it, or delete this file to stop training on it.\n")
        body = {"source": source, "added_at": now.isoformat(timespec="seconds"), "added_by": added_by,
                "reason": reason}
        with file.open("x", encoding="utf-8") as handle:
            handle.write(header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
        added.append(file)
        present.add(location)
    return added
