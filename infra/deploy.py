"""The Prefect deployments of gradus, and the work pool they run on: a process pool on this machine, or a
Kubernetes pool whose jobs run the gradus image (training jobs ask for a GPU).

    gradus deploy [--project-dir .] [--pool-type process|kubernetes] [--work-pool NAME] [--image IMAGE]

training-pipeline: weekly (Monday 03:00 UTC) and on demand from the UI with typed parameters; at most one
                   run at a time (a second trigger waits in the queue), so two trainings never share the
                   project workspace.
drift-monitor:     hourly, on the inference service's prediction log (serving.prediction_log; a parameter:
                   any file, glob or s3:// prefix of new text).
tune:              on demand (UI: trials, time budget, study, overrides): an Optuna search whose trials are
                   DVC experiments; writes a proposal, never params.yaml.
release:           started by the event `gradus.model.candidate` (a training run registered a gated candidate
                   for this project's registry) or by hand (UI, `gradus release VERSION`); one at a time.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from gradus.config.params import load_params
from gradus.config.pipeline import PARAMS_FILE
from gradus.errors import ConfigError
from gradus.events import MODEL_CANDIDATE
from gradus.registry.versions import project_registry
from infra.automations import ensure_automations

WORK_POOL = "gradus-local"
POOLS = {"process": WORK_POOL, "kubernetes": "gradus-kubernetes"}  # default pool name per pool type
IMAGE_PROJECT_DIR = "/opt/gradus"  # where the worker image holds the project (infra/docker)
TRAINING, DRIFT, RELEASE, TUNE = "training-pipeline", "drift-monitor", "release", "tune"
TRAINING_CRON, DRIFT_CRON = "0 3 * * 1", "0 * * * *"


def kubernetes_job_template() -> dict[str, Any]:
    """The Kubernetes worker's own default base job template (bundled with Prefect, so no collection needs
    installing where deployments are registered), plus two variables: `gpu_limit` (nvidia.com/gpu, 0 by
    default; the training deployment asks for 1) and `secret_name` (a Kubernetes Secret whose keys become the
    job's environment: registry and S3 credentials never appear in a manifest or a deployment)."""
    from importlib.resources import files

    metadata = files("prefect.server.api.collections_data").joinpath("views/aggregate-worker-metadata.json")
    template = copy.deepcopy(json.loads(metadata.read_text())["prefect-kubernetes"]["kubernetes"]
                             ["default_base_job_configuration"])
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    container["envFrom"] = [{"secretRef": {"name": "{{ secret_name }}", "optional": True}}]
    template["variables"]["properties"] |= {
        "gpu_limit": {"title": "GPUs", "type": "integer", "default": 0,
                      "description": "nvidia.com/gpu limit of the job's container (training: 1)"},
        "secret_name": {"title": "Secret", "type": "string", "default": "gradus-secrets",
                        "description": "Kubernetes Secret whose keys are set as environment variables"}}
    return template


def job_template(pool_type: str) -> dict[str, Any]:
    """The base job template of a pool type."""
    if pool_type == "kubernetes":
        return kubernetes_job_template()
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


async def ensure_work_pool(name: str, pool_type: str = "process") -> None:
    """Create the work pool (with its worker's base job template) if it is missing; a pool of that name and
    another type is an error naming both."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type=pool_type,
                                                         base_job_template=job_template(pool_type)))
            return
    if pool.type != pool_type:
        raise ConfigError(f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}; choose another "
                          "--work-pool name")


async def run_from_image(deployment_id: Any) -> None:
    """Runs use the code in the image, at IMAGE_PROJECT_DIR: no pull step (which would point at the folder the
    deployment was registered from). Set after `apply()` because an update from a deployment without storage
    leaves the stored pull steps (for example a process pool's) as they were."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    async with get_client() as client:
        await client.update_deployment(deployment_id, DeploymentUpdate(pull_steps=[], path=IMAGE_PROJECT_DIR))


def deploy_all(project_dir: str | Path = ".", work_pool: str | None = None, incoming: str | None = None,
               notify_url: str | None = None, pool_type: str = "process", image: str | None = None) -> dict[str, str]:
    """Register the deployments on a process or Kubernetes work pool (idempotent: re-running updates them);
    returns {name: deployment id}. The drift monitor watches `incoming`, by default the service's prediction
    log (real traffic). On Kubernetes, runs use the project inside `image` (at IMAGE_PROJECT_DIR)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger
    from prefect.flows import Flow

    if pool_type not in POOLS:
        raise ConfigError(f"--pool-type {pool_type}: choose one of {', '.join(POOLS)}")
    if pool_type == "kubernetes" and not image:
        raise ConfigError("--pool-type kubernetes needs --image: the gradus worker image (infra/docker) that runs "
                          "the flows")
    root = Path(project_dir).resolve()
    params = load_params(root / PARAMS_FILE)
    incoming = incoming or params.serving.prediction_log.files()
    work_pool = work_pool or POOLS[pool_type]
    asyncio.run(ensure_work_pool(work_pool, pool_type))
    run_dir = str(root) if pool_type == "process" else IMAGE_PROJECT_DIR
    flows = {name: Flow.from_source(source=str(root), entrypoint=entrypoint) for name, entrypoint in (
        (TRAINING, "flows/training.py:training_pipeline"), (DRIFT, "flows/drift.py:drift_monitor"),
        (RELEASE, "flows/release.py:release"), (TUNE, "flows/tune.py:tune"))}
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    # Only candidates of this project's registry: several projects may share one Prefect server.
    on_candidate = DeploymentEventTrigger(
        name="gated candidate", expect={MODEL_CANDIDATE},
        match={"gradus.registry": project_registry(root, params).store.location},
        parameters={"version": "{{ event.payload.version }}", "project_dir": run_dir})
    settings = {
        TRAINING: {"cron": TRAINING_CRON, "parameters": {"project_dir": run_dir}, "concurrency_limit": one_at_a_time,
                   "description": "ingest → validate → split → train → evaluate → compress → gate → register; "
                                  "typed overrides"},
        DRIFT: {"cron": DRIFT_CRON, "parameters": {"project_dir": run_dir, "current": incoming},
                "description": "Evidently drift report on new data; starts training-pipeline when drift is "
                               "significant"},
        RELEASE: {"parameters": {"project_dir": run_dir}, "concurrency_limit": one_at_a_time,
                  "triggers": [on_candidate],
                  "description": "shadow → canary steps → approval → champion, judged on live traffic; automatic "
                                 "rollback"},
        TUNE: {"parameters": {"project_dir": run_dir}, "concurrency_limit": one_at_a_time,
               "description": "Optuna search over the train params, every trial a DVC experiment; the best is a "
                              "proposal to review (dvc exp apply)"},
    }
    ids = {}
    for name, flow in flows.items():
        gpu = {"gpu_limit": 1} if name in (TRAINING, TUNE) else {}
        jobs = {} if pool_type == "process" else {"image": image} | gpu
        # to_deployment(...).apply() rather than flow.deploy(): deploy() first lists the pool's online workers,
        # a request prefect 3.8.8's client sends with null paging that its own server rejects (HTTP 422).
        deployment = flow.to_deployment(name=name, work_pool_name=work_pool, tags=["gradus"], job_variables=jobs,
                                        **settings[name])
        ids[name] = deployment.apply()
        if pool_type == "kubernetes":
            asyncio.run(run_from_image(ids[name]))
    deployed = {name: str(value) for name, value in ids.items()}
    # Notifications to people (infra/automations.py): only where a notification block is given or saved.
    automations = asyncio.run(ensure_automations(list(deployed.values()), notify_url))
    return deployed | {f"automation {name}": automation_id for name, automation_id in automations.items()}
