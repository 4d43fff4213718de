"""Hyperparameter search as a Prefect flow: every trial a DVC experiment, the best one a proposal to review."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from gradus.reports import proposal_markdown
from gradus.tuning import search


@task(name="search")
def run_search(project_dir: str, overrides: list[str], study: str | None, trials: int | None,
               timeout_minutes: float | None) -> dict[str, Any]:
    """The whole search in one task run; each trial's DVC output goes to the run's log."""
    logger = get_run_logger()
    return search(project_dir, overrides, study, trials, timeout_minutes, logger.info)


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
