"""The gradual release as a Prefect flow: a gated candidate goes shadow → canary steps → approval → champion,
each step judged on live traffic, rolled back automatically when a step fails. The analysis and the
controller's logic live in gradus/release/; this module orchestrates: task runs, the pause, artifacts, events.

Traffic shares are registry aliases, changed by compare-and-swap; the service follows them by polling, and a
restarted flow (or `gradus release VERSION` again) resumes from the step the registry says it is at.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import ConfigDict, Field, create_model

from gradus.config.operations import ReleaseConfig
from gradus.config.params import optional_override
from gradus.events import RELEASE_ROLLED_BACK
from gradus.release import analysis
from gradus.release.controller import (
    Release,
    RolledBack,
    Step,
    StepWatch,
    plan,
    promote,
    resume_index,
    start,
    wait_until_served,
    withdraw,
)
from gradus.reports import release_markdown

__all__ = ["ReleaseOverrides", "RolledBack", "release"]

# What a person may change for one release from the Prefect UI; unset fields keep params.yaml's value.
ReleaseOverrides = create_model("ReleaseOverrides", __config__=ConfigDict(extra="forbid"),
                                **{name: (optional_override(ReleaseConfig, name, "release"), None)
                                   for name in ReleaseConfig.model_fields})


class Approval(RunInput):
    """The form the paused run shows in the Prefect UI (Resume)."""

    decision: Literal["approve", "reject"] = Field(description="approve: the candidate becomes champion")
    comment: str = Field("", description="why (kept in the registry's audit log)")


@task(name="release-step", cache_policy=NO_CACHE)
def watch_step(release: Release, step: Step) -> dict[str, Any]:
    """Move the aliases to this step, then analyse its window every check interval until it passes (minimum
    dwell and candidate answers, every required check judged, the last analysis clean) or fails."""
    logger = get_run_logger()
    generation = release.move(step)
    if why := wait_until_served(release, step, generation):
        return {"step": step.name, "passed": False, "reasons": why, "checks": []}
    watch = StepWatch(release, step)
    watch.begin()
    while True:
        time.sleep(release.cfg.check_interval_s)
        outcome, checks, answers = watch.check()
        create_table_artifact(key=f"release-{release.version}-{step.key}", table=watch.rows,
                              description=f"Release of {release.version}, {step.name}: every analysis check")
        logger.info("%s check %d: %s (%d candidate answers)%s", step.name, watch.number, outcome, answers,
                    f" — {analysis.reasons(checks)}" if outcome == "fail" else "")
        if (result := watch.verdict(outcome, checks, answers)) is not None:
            return result


def roll_back(release: Release, step: str, reasons: str) -> None:
    """Withdraw the candidate (aliases, audit log), emit the event the alerts follow, publish the reasons;
    then the run fails."""
    withdraw(release, step, reasons)
    emit_event(event=RELEASE_ROLLED_BACK, resource={"prefect.resource.id": f"gradus.model.{release.version}"},
               payload={"version": release.version, "step": step, "reasons": reasons})
    summary(release, f"rolled back at {step}", reasons)
    raise RolledBack(f"release of {release.version} rolled back at {step}: {reasons}")


def summary(release: Release, outcome: str, detail: str) -> str:
    markdown = release_markdown(release.version, release.champion, release.history, outcome, detail)
    create_markdown_artifact(key=f"release-{release.version}-summary", markdown=markdown,
                             description=f"Release of {release.version}: outcome and every step")
    return markdown


def ask_approval(release: Release) -> tuple[Literal["approve", "reject", "timeout"], str]:
    """Pause for a person (the Prefect UI's Resume shows the form with the analysis so far). Returns the
    decision ("timeout" when nobody answered within release.approval_timeout_s) and why."""
    from prefect.exceptions import FlowPauseTimeout

    markdown = summary(release, "waiting for approval", "Approve to make the candidate the champion (100 %).")
    form = Approval.with_initial_data(description=markdown, decision="approve")
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=int(release.cfg.approval_timeout_s),
                                poll_interval=2, key=f"approve-{release.version}")
    except FlowPauseTimeout:
        return "timeout", f"no decision within release.approval_timeout_s={release.cfg.approval_timeout_s:g}"
    release.registry.audit("release-approval", version=release.version, run=release.run,
                           outcome=answer.decision, reason=answer.comment or answer.decision)
    return answer.decision, f"{answer.decision}d at approval" + (f": {answer.comment}" if answer.comment else "")


def _run_id() -> str:
    from prefect.runtime import flow_run

    return f"prefect:{flow_run.id}" if flow_run.id else "manual"


@flow(name="release", log_prints=True)
def release(version: str = "candidate", overrides: ReleaseOverrides | None = None,  # type: ignore[valid-type]
            project_dir: str = ".") -> dict[str, Any]:
    """shadow → canary steps → approval → champion for a gated version (or alias), judged on live traffic;
    a failed step rolls back (aliases, audit log, event) and fails the run."""
    logger = get_run_logger()
    chosen = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    current = start(Path(project_dir).resolve(), version, chosen, _run_id())
    if current is None:
        logger.info("%s is already the champion; nothing to release", version)
        return {"version": version, "outcome": "already champion"}
    steps = plan(current.cfg)
    first = resume_index(current.registry.aliases(), current.version, steps)
    if first:
        logger.info("resuming the release of %s at %s (the registry's canary share)", current.version,
                    steps[first].name)
    for step in steps[first:]:
        result = watch_step(current, step)
        current.history.append(result)
        if not result["passed"]:
            roll_back(current, step.name, result["reasons"])
    if current.cfg.require_approval:
        decision, why = ask_approval(current)
        if decision == "timeout" and current.cfg.on_approval_timeout == "hold":
            summary(current, "held", why + f"; the canary keeps {steps[-1].weight:.0%} (`gradus release` resumes)")
            return {"version": current.version, "outcome": "held", "reason": why}
        if decision != "approve":
            roll_back(current, "approval", why)
    else:
        why = "approval skipped (release.require_approval is false)"
    state = promote(current, why)
    summary(current, "promoted to champion", f"{why}. Aliases now: champion={state.champion}, "
                                             f"previous={state.previous}.")
    return {"version": current.version, "outcome": "promoted", "previous": state.previous,
            "steps": [{k: s[k] for k in ("step", "passed")} for s in current.history]}
