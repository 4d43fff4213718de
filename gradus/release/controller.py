"""The release controller's plain logic: the steps of a release, where one stands according to the registry,
moving the aliases by compare-and-swap, waiting for the service to follow, judging one step's window after
another, and ending a release either way. Prefect-free: flows/release.py runs each step as a task, pauses for
approval and publishes artifacts and events around these functions.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradus.config.operations import ReleaseConfig
from gradus.config.params import Params, load_params
from gradus.config.pipeline import PARAMS_FILE
from gradus.errors import GradusError
from gradus.registry.aliases import AliasState
from gradus.registry.versions import Registry, project_registry
from gradus.release import analysis
from gradus.task_types.base import DEFAULT_TASK
from gradus.task_types.seam import cross_task_check, task_of
from gradus.telemetry import MODEL_LOAD_FAILURES


class RolledBack(GradusError):
    """A release that ended in a rollback (or could not start): the run fails with the reasons."""


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
    task: str = DEFAULT_TASK  # the task type both versions share (start refuses two of different types)

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
        self.registry.audit("release-step", version=self.version, run=self.run, outcome="started",
                            reason=step.name, details={"weight": step.weight, "generation": state.generation})
        return state.generation

    def window(self, since: datetime) -> tuple[Any, Any]:
        log_cfg, serving = self.params.serving.prediction_log, self.params.serving
        log = analysis.read_log(log_cfg.files(), since, serving.endpoint_url, self.root)
        feedback = analysis.read_feedback(serving.feedback_files(), since, serving.endpoint_url, self.root)
        return log, feedback


def start(root: Path, version: str, chosen: dict[str, Any], run: str) -> Release | None:
    """The release's settings (params.yaml's, with this release's overrides) and versions; None when there is
    nothing to release (already champion)."""
    params = load_params(root / PARAMS_FILE)
    cfg = ReleaseConfig.model_validate({**params.release.model_dump(), **chosen})
    registry = project_registry(root, params)
    target, state = registry.resolve(version), registry.aliases()
    if state.champion is None:
        raise RolledBack("there is no champion to release against; the first model that passes the gate becomes "
                         "champion directly")
    if target == state.champion:
        return None
    task = task_of(registry.require(target))
    refused = cross_task_check(task_of(registry.require(state.champion)), task, state.champion)
    if refused is not None:
        raise RolledBack(f"release of {target}: {refused.detail}")
    return Release(root, params, cfg, registry, target, state.champion, run, task=task)


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
                        f"{', '.join(missing)}: it refused to load it (see {MODEL_LOAD_FAILURES} and its log)")
        time.sleep(0.5)
    return f"the service at {release.metrics_url} did not follow alias generation {generation} in time"


@dataclass
class StepWatch:
    """One step's running judgement: the counters since the step began, every check so far, the failures."""

    release: Release
    step: Step
    started: float = field(default_factory=time.monotonic)
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    counters: analysis.CounterWindow = field(default_factory=analysis.CounterWindow)
    number: int = 0
    failures: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def begin(self) -> None:
        self.counters.observe(analysis.parse_counters(self.release.scrape() or ""))

    def check(self) -> tuple[str, list[analysis.Check], int]:
        """Analyse the window so far: (outcome pass|fail|pending, the checks, the candidate's answers), each
        check recorded in the audit log."""
        release = self.release
        self.number += 1
        if (text := release.scrape()) is not None:
            self.counters.observe(analysis.parse_counters(text))
        log, feedback = release.window(self.since)
        checks = analysis.analyze(log, feedback, self.counters, release.champion, release.version, release.cfg,
                                  release.task)
        answers = analysis.candidate_answers(log, release.version)
        self.rows += [{"step": self.step.name, "check": self.number, "candidate answers": answers, **c.row()}
                      for c in checks]
        bad = analysis.failed(checks)
        self.failures += bool(bad)
        outcome = "fail" if bad else ("pass" if analysis.conclusive(checks) else "pending")
        release.registry.audit(
            "release-check", version=release.version, run=release.run, outcome=outcome,
            reason=f"{self.step.name} check {self.number}" + (f": {analysis.reasons(checks)}" if bad else ""),
            details={"step": self.step.name, "checks": [c.row() for c in checks], "answers": answers})
        return outcome, checks, answers

    def verdict(self, outcome: str, checks: list[analysis.Check], answers: int) -> dict[str, Any] | None:
        """The step's result once it is decided (passed or failed), else None: keep watching."""
        cfg, name = self.release.cfg, self.step.name
        elapsed = time.monotonic() - self.started
        if self.failures >= cfg.failure_limit:
            return {"step": name, "passed": False, "checks": self.rows,
                    "reasons": f"{self.failures} failed checks in {name}: {analysis.reasons(checks)}"}
        if outcome == "pass" and elapsed >= cfg.min_dwell_s and answers >= cfg.min_requests:
            return {"step": name, "passed": True, "checks": self.rows, "reasons": ""}
        if elapsed >= cfg.max_step_s:
            return {"step": name, "passed": False, "checks": self.rows,
                    "reasons": f"{name} not judged within release.max_step_s={cfg.max_step_s:g} "
                               f"({answers} candidate answers of {cfg.min_requests} needed)"}
        return None


def ended(state: AliasState, version: str) -> dict[str, Any]:
    """The aliases of a release that is over, either way: no canary, no shadow, and `candidate` no longer
    pointing at the released version (so `gradus release candidate` does not start it again)."""
    return {"canary": None, "shadow": None, "candidate": None if state.candidate == version else state.candidate}


def withdraw(release: Release, step: str, reasons: str) -> None:
    """Canary share to 0 and shadow cleared (by compare-and-swap), the version recorded as rejected."""
    release.registry.update_aliases(lambda state: ended(state, release.version), action="release-rollback",
                                    run=release.run,
                                    reason=f"release of {release.version} rolled back at {step}: {reasons}")
    release.registry.audit("release", version=release.version, run=release.run, outcome="rejected",
                           reason=f"{step}: {reasons}", details={"history": release.history})


def promote(release: Release, why: str) -> AliasState:
    """The candidate becomes champion, the old champion previous; canary and shadow cleared, in one change."""
    def change(state: AliasState) -> dict[str, Any]:
        return {**ended(state, release.version), "champion": release.version, "previous": state.champion}

    state = release.registry.update_aliases(change, action="release-promote", run=release.run,
                                            reason=f"release of {release.version}: {why}")
    release.registry.audit("release", version=release.version, run=release.run, outcome="promoted", reason=why,
                           details={"history": release.history})
    return state


