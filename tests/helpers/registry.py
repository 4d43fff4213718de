"""Registry test data: lineage records that make distinct versions of the same model files."""

from __future__ import annotations


def lineage(tag: str) -> dict:
    """A lineage record; a different tag makes a different version of the same files."""
    return {"tag": tag, "params": {"train": {"max_length": 32}}, "base_model": {"name": "tiny", "revision": "r1"},
            "datasets": {"raw": f"md5-{tag}"}, "code": {"commit": "0" * 40, "branch": "main", "modified": []},
            "dvc_lock": {}}
