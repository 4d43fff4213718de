"""`python -m tasks STAGE [--params params.yaml] [--set key=value ...]`: what dvc.yaml calls."""

from __future__ import annotations

import argparse
import json
import sys

from gradus.config.pipeline import PARAMS_FILE
from gradus.errors import GradusError
from gradus.stages import STAGES
from tasks.runner import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks", description="Run one gradus pipeline stage.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set train.epochs=1 (repeatable)")
    args = parser.parse_args(argv)
    try:
        summary = run_stage(args.stage, args.params, args.overrides)
    except GradusError as exc:
        print(f"gradus {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    print(f"gradus {args.stage}: " + json.dumps(summary, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
