"""What the whole-lifecycle tests of each task type share: the first champion from the training flow, then the
demo's own lifecycle run against it, and the release checks the registry's audit log holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from cli.lifecycle import run_lifecycle
from flows.training import TrainingOverrides, training_pipeline
from gradus.registry.versions import open_registry
from tests.conftest import sh


def first_champion_then_lifecycle(project_repo: Path, task: str, metric: str, windows: dict[str, Any],
                                  check_first: Callable[[Path], None] | None = None
                                  ) -> tuple[str, dict[str, Any], str, pd.DataFrame]:
    """(the first champion, the lifecycle's outcome, what it said, the feedback it stored): the
    training flow makes the first champion of `task` (its `metric` above 0.5: it learned the demo; `check_first`
    reads its run's workspace before anything else runs), then `gradus lifecycle`'s code serves it, replays traffic
    for 15 s at 40/s, retrains, releases and reports drift."""
    sh(["git", "commit", "-qam", task], project_repo)
    first = training_pipeline(TrainingOverrides(), str(project_repo), push=True)
    champion = first["registry"]["aliases"]["champion"]
    assert first["gate"]["mode"] == "first_model" and champion == first["registry"]["version"], first["gate"]
    assert first["metrics"][metric] > 0.5, first["metrics"]
    if check_first is not None:
        check_first(Path(first["workspace"]["path"]))
    lines: list[str] = []
    outcome = run_lifecycle(project_repo, 40.0, lines.append, traffic_s=15, release_settings=windows)
    said = "\n".join(lines)
    assert outcome["task"] == task and f"serve the champion {champion} ({task})" in said
    feedback = pd.concat([pd.read_json(path, lines=True) for path in (project_repo / "data" / "feedback").glob(
        "*.jsonl")])
    return champion, outcome, said, feedback


def promoted_retrain(project_repo: Path, outcome: dict[str, Any], champion: str, task: str,
                     feedback: pd.DataFrame) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]]]:
    """(the retrain's result, its candidate, the release's judged checks) after asserting what every
    type's lifecycle must show: the retrain read the demo's 600 rows and the first replay's feedback (15 s at 40/s;
    the release's replay came later), passed the gate against the champion, registered a version of `task`, and the
    release promoted it with the champion kept as `previous`."""
    retrain = outcome["retrain"]
    assert 600 + 400 < retrain["data"]["rows_in"] <= 600 + len(feedback), retrain["data"]
    assert retrain["gate"]["passed"] and retrain["gate"]["mode"] == "challenger", retrain["gate"]
    candidate = retrain["registry"]["version"]
    registry = open_registry(str(project_repo / "registry"))
    assert registry.require(candidate)["task"] == task
    assert outcome["release"]["outcome"] == "promoted", outcome["release"]
    assert registry.aliases().champion == candidate and registry.aliases().previous == champion
    return retrain, candidate, judged_checks(registry, candidate)


def judged_checks(registry: Any, version: str) -> dict[str, dict[str, Any]]:
    """The last judged value of each release check of `version` (pending ones left out), by name."""
    return {check["name"]: check for event in registry.audit_log()
            if event["action"] == "release-check" and event["version"] == version
            for check in event["details"]["checks"] if check["status"] != "pending"}
