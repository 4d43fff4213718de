"""Hyperparameter search as a Prefect flow: every trial a DVC experiment, the best one a proposal to review."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from gradus.tuning import search


@task(name="search")
def run_search(project_dir: str, overrides: list[str], study: str | None, trials: int | None,
               timeout_minutes: float | None) -> dict[str, Any]:
    """The whole search in one task run; each trial's DVC output goes to the run's log."""
    logger = get_run_logger()
    return search(project_dir, overrides, study, trials, timeout_minutes, logger.info)


def proposal_markdown(proposal: dict[str, Any]) -> str:
    """The trials (best first) and how to adopt the best one."""
    lines = [f"# Search {proposal['study']}", "", f"Objective: {proposal['objective']}.", "",
             "| trial | experiment | state | val macro-F1 | evaluations | params |", "|---|---|---|---|---|---|"]
    ranked = sorted(proposal["trials"], key=lambda t: -(t["val_macro_f1"] or 0.0))
    for t in ranked:
        score = f"{t['val_macro_f1']:.4f}" if t["val_macro_f1"] is not None else "-"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | {t['experiment']} | {t['state']} | {score} | {t['evaluations']} | {params} |")
    best = proposal["best"]
    if best:
        lines += ["", f"Best: trial {best['number']} ({best['experiment']}), val macro-F1 {best['val_macro_f1']:.4f}.",
                  "params.yaml is unchanged; to adopt it:", ""] + [f"    {command}" for command in best["adopt"]]
    return "\n".join(lines)


@flow(name="tune", log_prints=True)
def tune(trials: Annotated[int | None, Field(ge=1, description="trials this run (unset: tune.trials)")] = None,
         timeout_minutes: Annotated[float | None, Field(gt=0, description="no trial starts after this "
                                                                          "(unset: tune.timeout_minutes)")] = None,
         study: Annotated[str | None, Field(description="a study name: the same name continues that search")] = None,
         overrides: Annotated[list[str], Field(description="KEY=VALUE: tune.* shape the search; other keys are "
                                                            "fixed for every trial")] = [],  # noqa: B006
         project_dir: str = ".") -> dict[str, Any]:
    """Budgeted Optuna search over the train params; each trial a DVC experiment (`dvc exp show`)."""
    proposal = run_search(project_dir, list(overrides), study, trials, timeout_minutes)
    create_markdown_artifact(proposal_markdown(proposal), key="tune-proposal",
                             description=f"search {proposal['study']}: trials and the proposal")
    return proposal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=tune.__doc__)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--timeout-minutes", type=float)
    parser.add_argument("--study")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--project-dir", default=".")
    args = parser.parse_args(argv)
    json.dump(tune(args.trials, args.timeout_minutes, args.study, args.overrides, args.project_dir), sys.stdout,
              indent=2)


if __name__ == "__main__":
    main()
