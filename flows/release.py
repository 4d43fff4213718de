"""The gradual release as a Prefect flow: a gated candidate goes shadow → canary steps → approval → champion,
each step judged on live traffic (gradus/release.py), rolled back automatically when a step fails.

Traffic shares are registry aliases, changed by compare-and-swap; the service follows them by polling, and a
restarted flow (or `gradus release VERSION` again) resumes from the step the registry says it is at.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, create_model

from gradus import release as analysis
from gradus.config import PARAMS_FILE, Params, ReleaseConfig, load_params, optional_override
from gradus.events import RELEASE_ROLLED_BACK
from gradus.registry.aliases import AliasState
from gradus.registry.versions import Registry, project_registry

# What a person may change for one release from the Prefect UI; unset fields keep params.yaml's value.
ReleaseOverrides = create_model("ReleaseOverrides", __config__=ConfigDict(extra="forbid"),
                                **{name: (optional_override(ReleaseConfig, name, "release"), None)
                                   for name in ReleaseConfig.model_fields})


class Approval(RunInput):
    """The form the paused run shows in the Prefect UI (Resume)."""

    decision: Literal["approve", "reject"] = Field(description="approve: the candidate becomes champion")
    comment: str = Field("", description="why (kept in the registry's audit log)")


class RolledBack(RuntimeError):
    """A release that ended in a rollback: the run fails with the reasons."""


@dataclass(frozen=True)
class Step:
    name: str
    weight: float  # the canary's share; 0 for the shadow step

    @property
    def key(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def plan(cfg: ReleaseConfig) -> list[Step]:
    """The steps a release goes through before approval."""
    return ([Step("shadow", 0.0)] if cfg.shadow else []) + [Step(f"canary {w:.0%}", w) for w in cfg.canary_steps]


def resume_index(state: AliasState, version: str, steps: list[Step]) -> int:
    """Where a release of `version` stands in the registry: the step its canary share (or shadow) says."""
    canary = state.canary or {}
    if canary.get("version") == version and canary.get("weight", 0) > 0:
        reached = [i for i, step in enumerate(steps) if 0 < step.weight <= canary["weight"] + 1e-9]
        return reached[-1] if reached else 0
    return 0


@dataclass
class Release:
    """One release in progress: what it needs at every step."""

    root: Path
    params: Params
    cfg: ReleaseConfig
    registry: Registry
    version: str
    champion: str
    run: str
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics_url(self) -> str:
        return (self.cfg.service_url or self.params.serving.url()).rstrip("/") + "/metrics"

    def scrape(self) -> str | None:
        import httpx

        try:
            response = httpx.get(self.metrics_url, timeout=5)
            return response.text if response.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def move(self, step: Step) -> int:
        """The step's aliases, by compare-and-swap: the candidate is the shadow (so both models answer the same
        texts) and gets the step's canary share. Returns the generation written."""
        canary = {"version": self.version, "weight": step.weight} if step.weight > 0 else None
        state = self.registry.update_aliases(lambda _: {"shadow": self.version, "canary": canary},
                                             action="release-step", run=self.run,
                                             reason=f"release of {self.version}: {step.name}")
        return state.generation

    def window(self, since: datetime) -> tuple[Any, Any]:
        log_cfg, serving = self.params.serving.prediction_log, self.params.serving
        log = analysis.read_log(log_cfg.files(), since, serving.endpoint_url, self.root)
        feedback = analysis.read_feedback(serving.feedback_files(), since, serving.endpoint_url, self.root)
        return log, feedback


def wait_until_served(release: Release, step: Step, generation: int) -> str | None:
    """Wait for the service to follow `generation`; None once it serves the candidate as the step needs, else
    why not (it refused the version, or it cannot be reached within the step's limit)."""
    deadline = time.monotonic() + min(release.cfg.max_step_s, max(60.0, 10 * release.params.serving.poll_interval_s))
    while time.monotonic() < deadline:
        text = release.scrape()
        if text is not None:
            followed, served = analysis.served_versions(text)
            if followed >= generation:
                wanted = {"shadow"} | ({"canary"} if step.weight > 0 else set())
                missing = sorted(a for a in wanted if served.get(a) != release.version)
                if not missing:
                    return None
                return (f"the service follows generation {followed} but does not serve {release.version} as "
                        f"{', '.join(missing)}: it refused to load it (see gradus_model_load_failures and its log)")
        time.sleep(0.5)
    return f"the service at {release.metrics_url} did not follow alias generation {generation} in time"


def check_rows(step: Step, number: int, checks: list[analysis.Check], answers: int) -> list[dict[str, Any]]:
    return [{"step": step.name, "check": number, "candidate answers": answers, **c.row()} for c in checks]


@task(name="release-step", cache_policy=NO_CACHE)
def watch_step(release: Release, step: Step) -> dict[str, Any]:
    """Move the aliases to this step, then analyse its window every check interval until it passes (minimum
    dwell and candidate answers, every required check judged, the last analysis clean) or fails."""
    logger, cfg = get_run_logger(), release.cfg
    generation = release.move(step)
    release.registry.audit("release-step", version=release.version, run=release.run, outcome="started",
                           reason=step.name, details={"weight": step.weight, "generation": generation})
    if why := wait_until_served(release, step, generation):
        return {"step": step.name, "passed": False, "reasons": why, "checks": []}
    started, since = time.monotonic(), datetime.now(UTC)
    counters = analysis.CounterWindow()
    counters.observe(analysis.parse_counters(release.scrape() or ""))
    failures, number, rows = 0, 0, []
    while True:
        time.sleep(cfg.check_interval_s)
        number += 1
        if (text := release.scrape()) is not None:
            counters.observe(analysis.parse_counters(text))
        log, feedback = release.window(since)
        checks = analysis.analyze(log, feedback, counters, release.champion, release.version, cfg)
        answers = analysis.candidate_answers(log, release.version)
        rows += check_rows(step, number, checks, answers)
        bad = analysis.failed(checks)
        failures += bool(bad)
        outcome = "fail" if bad else ("pass" if analysis.conclusive(checks) else "pending")
        release.registry.audit("release-check", version=release.version, run=release.run, outcome=outcome,
                               reason=f"{step.name} check {number}" + (f": {analysis.reasons(checks)}" if bad else ""),
                               details={"step": step.name, "checks": [c.row() for c in checks], "answers": answers})
        create_table_artifact(key=f"release-{release.version}-{step.key}", table=rows,
                              description=f"Release of {release.version}, {step.name}: every analysis check")
        logger.info("%s check %d: %s (%d candidate answers)%s", step.name, number, outcome, answers,
                    f" — {analysis.reasons(checks)}" if bad else "")
        elapsed = time.monotonic() - started
        if failures >= cfg.failure_limit:
            return {"step": step.name, "passed": False, "checks": rows,
                    "reasons": f"{failures} failed checks in {step.name}: {analysis.reasons(checks)}"}
        if (not bad and analysis.conclusive(checks) and elapsed >= cfg.min_dwell_s
                and answers >= cfg.min_requests):
            return {"step": step.name, "passed": True, "checks": rows, "reasons": ""}
        if elapsed >= cfg.max_step_s:
            return {"step": step.name, "passed": False, "checks": rows,
                    "reasons": f"{step.name} not judged within release.max_step_s={cfg.max_step_s:g} "
                               f"({answers} candidate answers of {cfg.min_requests} needed)"}


def ended(state: AliasState, version: str) -> dict[str, Any]:
    """The aliases of a release that is over, either way: no canary, no shadow, and `candidate` no longer
    pointing at the released version (so `gradus release candidate` does not start it again)."""
    return {"canary": None, "shadow": None, "candidate": None if state.candidate == version else state.candidate}


def roll_back(release: Release, step: str, reasons: str) -> None:
    """Canary share to 0 and shadow cleared (by compare-and-swap), the version recorded as rejected with the
    reasons, an event for the alerts, the reasons published; then the run fails."""
    release.registry.update_aliases(lambda state: ended(state, release.version), action="release-rollback",
                                    run=release.run,
                                    reason=f"release of {release.version} rolled back at {step}: {reasons}")
    release.registry.audit("release", version=release.version, run=release.run, outcome="rejected",
                           reason=f"{step}: {reasons}", details={"history": release.history})
    emit_event(event=RELEASE_ROLLED_BACK, resource={"prefect.resource.id": f"gradus.model.{release.version}"},
               payload={"version": release.version, "step": step, "reasons": reasons})
    summary(release, f"rolled back at {step}", reasons)
    raise RolledBack(f"release of {release.version} rolled back at {step}: {reasons}")


def promote(release: Release, why: str) -> AliasState:
    """The candidate becomes champion, the old champion previous; canary and shadow cleared, in one change."""
    def change(state: AliasState) -> dict[str, Any]:
        return {**ended(state, release.version), "champion": release.version, "previous": state.champion}

    state = release.registry.update_aliases(change, action="release-promote", run=release.run,
                                            reason=f"release of {release.version}: {why}")
    release.registry.audit("release", version=release.version, run=release.run, outcome="promoted", reason=why,
                           details={"history": release.history})
    return state


def summary(release: Release, outcome: str, detail: str) -> str:
    lines = [f"# Release of {release.version}: {outcome}", "", f"Champion before: {release.champion}.", "",
             detail, "", "| step | passed | checks | last analysis |", "|---|---|---|---|"]
    for step in release.history:
        checks = max((row["check"] for row in step["checks"]), default=0)
        last = [row for row in step["checks"] if row["check"] == checks]
        shown = ", ".join(f"{r['name']} {r['status']} ({r['value']})" for r in last) or "-"
        lines.append(f"| {step['step']} | {'yes' if step['passed'] else 'no'} | {checks} | {shown} |")
    markdown = "\n".join(lines)
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


def start(root: Path, version: str, overrides: BaseModel | None) -> Release | None:
    """The release's settings and versions; None when there is nothing to release (already champion)."""
    params = load_params(root / PARAMS_FILE)
    chosen = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    cfg = ReleaseConfig.model_validate({**params.release.model_dump(), **chosen})
    registry = project_registry(root, params)
    target, state = registry.resolve(version), registry.aliases()
    if state.champion is None:
        raise RolledBack("there is no champion to release against; the first model that passes the gate becomes "
                         "champion directly")
    if target == state.champion:
        return None
    return Release(root, params, cfg, registry, target, state.champion, _run_id())


@flow(name="release", log_prints=True)
def release(version: str = "candidate", overrides: ReleaseOverrides | None = None,  # type: ignore[valid-type]
            project_dir: str = ".") -> dict[str, Any]:
    """shadow → canary steps → approval → champion for a gated version (or alias), judged on live traffic;
    a failed step rolls back (aliases, audit log, event) and fails the run."""
    logger = get_run_logger()
    current = start(Path(project_dir).resolve(), version, overrides)
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
