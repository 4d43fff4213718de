"""The Prefect deployments of gradus, and the process work pool they run on.

    gradus deploy [--project-dir .] [--work-pool gradus-local]    (or: python -m infra.deploy)

training-pipeline: weekly (Monday 03:00 UTC) and on demand from the UI with typed parameters; at most one
                   run at a time (a second trigger waits in the queue), so two trainings never share the
                   project workspace.
drift-monitor:     hourly, on the inference service's prediction log (serving.prediction_log; a parameter:
                   any file, glob or s3:// prefix of new text).
release:           started by the event `gradus.model.candidate` (a training run registered a gated candidate
                   for this project's registry) or by hand (UI, `gradus release VERSION`); one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gradus.config import PARAMS_FILE, load_params
from gradus.events import MODEL_CANDIDATE
from gradus.registry import project_registry
from infra.automations import ensure_automations

WORK_POOL = "gradus-local"
TRAINING, DRIFT, RELEASE = "training-pipeline", "drift-monitor", "release"
TRAINING_CRON, DRIFT_CRON = "0 3 * * 1", "0 * * * *"


async def ensure_work_pool(name: str) -> None:
    """Create the process work pool (with the process worker's default job template) if it is missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))


def deploy_all(project_dir: str | Path = ".", work_pool: str = WORK_POOL,
               incoming: str | None = None, notify_url: str | None = None) -> dict[str, str]:
    """Register both deployments (idempotent: re-running updates them); returns {name: deployment id}. The drift
    monitor watches `incoming`, by default the service's prediction log (real traffic)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger
    from prefect.flows import Flow

    root = Path(project_dir).resolve()
    params = load_params(root / PARAMS_FILE)
    incoming = incoming or params.serving.prediction_log.files()
    asyncio.run(ensure_work_pool(work_pool))
    training = Flow.from_source(source=str(root), entrypoint="flows/training.py:training_pipeline")
    drift = Flow.from_source(source=str(root), entrypoint="flows/drift.py:drift_monitor")
    release = Flow.from_source(source=str(root), entrypoint="flows/release.py:release")
    common = {"work_pool_name": work_pool, "tags": ["gradus"]}
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    # Only candidates of this project's registry: several projects may share one Prefect server.
    on_candidate = DeploymentEventTrigger(
        name="gated candidate", expect={MODEL_CANDIDATE},
        match={"gradus.registry": project_registry(root, params).store.location},
        parameters={"version": "{{ event.payload.version }}", "project_dir": str(root)})
    # to_deployment(...).apply() rather than flow.deploy(): deploy() first lists the pool's online workers,
    # a request prefect 3.8.8's client sends with null paging that its own server rejects (HTTP 422).
    ids = {
        TRAINING: training.to_deployment(
            name=TRAINING, cron=TRAINING_CRON, parameters={"project_dir": str(root)}, concurrency_limit=one_at_a_time,
            description="ingest → validate → split → train → evaluate → compress → gate → register; typed overrides",
            **common).apply(),
        DRIFT: drift.to_deployment(
            name=DRIFT, cron=DRIFT_CRON, parameters={"project_dir": str(root), "current": incoming},
            description="Evidently drift report on new data; starts training-pipeline when drift is significant",
            **common).apply(),
        RELEASE: release.to_deployment(
            name=RELEASE, parameters={"project_dir": str(root)}, concurrency_limit=one_at_a_time,
            triggers=[on_candidate],
            description="shadow → canary steps → approval → champion, judged on live traffic; automatic rollback",
            **common).apply(),
    }
    deployed = {name: str(value) for name, value in ids.items()}
    # Notifications to people (infra/automations.py): only where a notification block is given or saved.
    automations = asyncio.run(ensure_automations(list(deployed.values()), notify_url))
    return deployed | {f"automation {name}": automation_id for name, automation_id in automations.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--work-pool", default=WORK_POOL)
    parser.add_argument("--incoming", default=None, help="default: the service's prediction log")
    parser.add_argument("--notify-url", default=None, help="webhook for notifications (or GRADUS_NOTIFY_WEBHOOK)")
    args = parser.parse_args(argv)
    for name, deployment in deploy_all(args.project_dir, args.work_pool, args.incoming, args.notify_url).items():
        print(f"deployed {name}: {deployment}")


if __name__ == "__main__":
    main()
