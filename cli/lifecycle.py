"""`gradus lifecycle`: the second half of the demo, after the first champion is registered. It serves the
champion, replays demo traffic whose labels come back as feedback, retrains on that feedback, releases the new
candidate through shadow and canary steps (short windows, approval skipped: both said on screen), and ends
with the new champion answering and a drift report on the traffic it served. One machine, no server by hand."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.processes import free_port, start_until_ready
from gradus.config.params import load_params
from gradus.config.pipeline import PARAMS_FILE
from gradus.errors import GradusError
from gradus.task_types.seam import task_of

# Demo-only settings of the service process (params.yaml keeps its production values): a quick alias poll and
# quick log flushes, so each release step is judged within seconds.
SERVICE_OVERRIDES = ["serving.poll_interval_s=0.5", "serving.prediction_log.flush_seconds=1",
                     "serving.shutdown_delay_s=0"]
# The demo's retrain is judged with a wider non-inferiority margin, unless params.yaml's is wider (said on screen,
# kept in its lineage).
DEMO_GATE_MARGIN = 0.03
# Short windows for the demo's release; params.yaml's release: section holds the production ones.
DEMO_RELEASE = {"min_dwell_s": 6, "min_requests": 150, "min_samples": 150, "check_interval_s": 3,
                "max_step_s": 120, "min_feedback": 40, "require_approval": False}


def start_service(root: Path, port: int, say: Callable[[str], None]) -> subprocess.Popen[bytes]:
    """`gradus serve` in its own process; returns once it is ready (model loaded and warmed)."""
    log = root / ".gradus" / "demo-service.log"
    command = [str(Path(sys.executable).parent / "gradus"), "serve", "--port", str(port),
               "--params", str(root / PARAMS_FILE)] + [arg for o in SERVICE_OVERRIDES for arg in ("--set", o)]
    process = start_until_ready(command, f"http://127.0.0.1:{port}/v2/health/ready", log, timeout=180, cwd=root)
    say(f"service   ready on http://127.0.0.1:{port} (log: {log})")
    return process


def traffic_file(root: Path, rows: int, seed: int, task: str) -> Path:
    """Fresh demo texts of the champion's task type with their labels (labels become late feedback), as JSONL."""
    from gradus.task_types.seam import task_type

    kind = task_type(task)
    frame = kind.demo(rows, seed)[0]
    # Blank texts are dropped by replay's reader. A row without a usable label (an entity text with none, the demo's
    # malformed rows) is still sent, as traffic is, but gives no feedback: a 422 is all it would earn. (Dropping those
    # rows made the entity demo's traffic richer in entities than its training data, and drift said so.)
    frame = frame[frame["text"].map(lambda v: isinstance(v, str) and bool(v.strip()))].copy()
    usable = [_labelled(label) and kind.target_problem(text, label) is None
              for text, label in zip(frame["text"], frame["label"], strict=True)]
    frame["label"] = [label if ok else None for label, ok in zip(frame["label"], usable, strict=True)]
    path = root / "data" / "demo-traffic" / f"traffic-{task}-{seed}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["text", "label"]].to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def _labelled(value: Any) -> bool:
    """A label, a non-empty list of labels, or a non-empty list of entities."""
    given = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else []
    return bool(given) and (all(isinstance(v, str) and v.strip() for v in given)
                            or all(isinstance(v, dict) for v in given))


def feedback_files(root: Path, params: Any) -> list[str]:
    """The service's local feedback files, relative to the project (none for an s3:// location): the demo
    retrains on the ones its own replay wrote, so a second demo does not train on the first one's twice."""
    if params.serving.feedback.startswith("s3://"):
        return []
    return sorted(str(path.relative_to(root)) for path in (root / params.serving.feedback).glob("*.jsonl"))


def replay_file(url: str, path: Path, rate: float, seconds: float) -> dict[str, Any]:
    from cli.replay import load_rows, replay

    texts, labels = load_rows(str(path), "text", "label")
    return asyncio.run(replay(url, texts, labels, rate=rate, duration=seconds, feedback_delay=1.0, users=1000))


def run_lifecycle(root: Path, rate: float, say: Callable[[str], None], traffic_s: float = 40.0,
                  release_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lifecycle after the first champion; returns what each step gave (the retrain's result, the release's
    outcome, the drift summary) for a caller that checks them. `traffic_s` and `release_settings` (release keys
    over the demo's windows) shorten it for tests."""
    from cli.replay import summary_lines
    from flows.drift import drift_monitor
    from flows.release import ReleaseOverrides, release
    from flows.training import TrainingOverrides, training_pipeline
    from gradus.registry.versions import project_registry
    from gradus.reports import format_result

    params = load_params(root / PARAMS_FILE)
    registry = project_registry(root, params)
    first = registry.aliases().champion
    if first is None:
        raise GradusError("no champion yet: run `gradus run` first (make demo does)")
    # The lifecycle follows the champion's task type (a label-set champion from `gradus run --set
    # model.task=multi_label` gets label-set traffic, feedback and retrain), whatever params.yaml's model.task says.
    task = task_of(registry.require(first))
    same_task = [] if task == params.model.task else [f"model.task={task}"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    earlier = feedback_files(root, params)
    say(f"\n== 1/5 serve the champion {first} ({task})")
    service = start_service(root, port, say)
    try:
        say(f"\n== 2/5 replay demo traffic at {rate:g} requests/s for {traffic_s:g} s; labels come back 1 s later as "
            "feedback")
        say(summary_lines(replay_file(url, traffic_file(root, 1200, 1001, task), rate, traffic_s)))
        time.sleep(2)  # the last feedback lines and log rows reach their files
        feedback = [path for path in feedback_files(root, params) if path not in earlier] or [
            params.serving.feedback_files()]
        say(f"\n== 3/5 retrain with this demo's feedback ({', '.join(feedback)}) added to this run's data sources"
            + (f"; {len(earlier)} feedback file(s) of earlier demos left out" if earlier else ""))
        margin = max(DEMO_GATE_MARGIN, params.gate.margin)
        say(f"         demo gate: gate.margin={margin:g} (params.yaml: {params.gate.margin:g}). With ~600 test rows "
            "the paired bootstrap interval is about ±1.4 points wide, so a retrain on the same kind of data rarely "
            "proves non-inferiority within 0.01; both overrides live in this run's workspace and lineage only, "
            "params.yaml is untouched")
        result = training_pipeline(TrainingOverrides(add_sources=feedback, reason="demo: retrain on feedback",
                                                     extra=[f"gate.margin={margin:g}", *same_task]),
                                   str(root), push=True)
        say(format_result(result))
        candidate = result["registry"]["aliases"].get("candidate")
        if not result["gate"]["passed"] or candidate in (None, first):
            say("\nthe retrained model is not a new gated candidate (see the gate above): nothing to release")
            return {"task": task, "retrain": result}
        windows = {**DEMO_RELEASE, **(release_settings or {})}
        shares = windows.get("canary_steps", params.release.canary_steps)
        steps = " → ".join(["shadow", *(f"{share:.0%}" for share in shares), "100 %"])
        say(f"\n== 4/5 release {candidate}: {steps}, checked every {windows['check_interval_s']} s while traffic "
            "is replayed")
        say(f"         demo windows: each step >= {windows['min_dwell_s']} s and >= {windows['min_requests']} "
            "candidate answers (params.yaml: 300 s, 200); approval SKIPPED (release.require_approval: false for the "
            "demo; true in params.yaml)")
        sender = threading.Thread(target=replay_file, daemon=True,
                                  args=(url, traffic_file(root, 700, 1002, task), rate, 150))
        sender.start()
        outcome = release(candidate, ReleaseOverrides(**windows, service_url=url), str(root))
        say(f"release   {outcome['outcome']}: " + ", ".join(
            f"{s['step']} {'passed' if s['passed'] else 'failed'}" for s in outcome.get("steps", [])))
        drift = finish(root, params, url, drift_monitor, say)
        return {"task": task, "retrain": result, "release": outcome, "drift": drift}
    finally:
        service.terminate()
        service.wait(30)


def finish(root: Path, params: Any, url: str, drift_monitor: Callable[..., dict[str, Any]],
           say: Callable[[str], None]) -> dict[str, Any]:
    import httpx

    time.sleep(1.5)  # the service's next alias poll
    text = "I lost my card yesterday"
    answer = httpx.post(f"{url}/v1/predict", json={"texts": [text]}, timeout=30).json()
    say(f"\nnow served by {answer['model']['alias']} {answer['model']['version']}: "
        f"{text!r} → {answered(answer['predictions'][0])}")
    say("\n== 5/5 drift report on the traffic the service answered (its prediction log)")
    summary = drift_monitor(params.serving.prediction_log.files(), str(root), False)
    drifted = summary["decision"].get("drifted_signals") or []
    say(f"drift     {len(drifted)} of {len(summary['signals'])} signals drifted; "
        f"{'retrain' if summary['decision']['retrain'] else 'no retrain'}; reports: {', '.join(summary['reports'])}")
    say("\nNext: `gradus status --url " + url + "` while a service runs, `gradus models log` for the release"
        " history, `make prefect` for the UI with the deployments (release included).")
    return summary


def answered(prediction: dict[str, Any]) -> str:
    """One /v1/predict answer as a line: its label, its label set ([] when none is over its threshold), or its
    entities (type: text)."""
    if "entities" in prediction:
        return "[" + ", ".join(f"{e['type']}: {e['text']!r}" for e in prediction["entities"]) + "]"
    if "labels" in prediction:
        return "[" + ", ".join(item["label"] for item in prediction["labels"]) + "]"
    return str(prediction["label"])
