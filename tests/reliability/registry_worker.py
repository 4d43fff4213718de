"""A separate process that registers a model, so tests can kill it (GRADUS_FAILPOINT) mid-registration.

    python -m tests.reliability.registry_worker URI MODEL_DIR LINEAGE_TAG
"""

from __future__ import annotations

import json
import sys

from gradus.registry.versions import open_registry


def lineage(tag: str) -> dict:
    """A lineage record; a different tag makes a different version of the same files."""
    return {"tag": tag, "params": {"train": {"max_length": 32}}, "base_model": {"name": "tiny", "revision": "r1"},
            "datasets": {"raw": f"md5-{tag}"}, "code": {"commit": "0" * 40, "branch": "main", "modified": []},
            "dvc_lock": {}}


def main(uri: str, model_dir: str, tag: str) -> None:
    manifest, created = open_registry(uri).register(model_dir, lineage(tag), {"accuracy": 0.5}, {"passed": True},
                                                    run=f"worker-{tag}", reason="reliability test")
    print(json.dumps({"version": manifest["version"], "created": created}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
