"""A separate process that registers a model, so tests can kill it (GRADUS_FAILPOINT) mid-registration.

    python -m tests.reliability.registry_worker URI MODEL_DIR LINEAGE_TAG
"""

from __future__ import annotations

import json
import sys

from gradus.registry.versions import open_registry
from tests.helpers.registry import lineage


def main(uri: str, model_dir: str, tag: str) -> None:
    manifest, created = open_registry(uri).register(model_dir, lineage(tag), {"accuracy": 0.5}, {"passed": True},
                                                    run=f"worker-{tag}", reason="reliability test")
    print(json.dumps({"version": manifest["version"], "created": created}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
