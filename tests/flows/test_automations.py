"""Notifications to people, on a real Prefect server: `gradus deploy --notify-url` creates a notification block
and the automations; a failed deployment run, a drift-triggered retrain and a rolled-back release each reach a
local webhook receiver through Prefect's own trigger and action services."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.states import Failed
from prefect.testing.utilities import prefect_test_harness

from gradus.events import DRIFT_RETRAIN, RELEASE_ROLLED_BACK
from infra.automations import FAILED, RETRAIN, ROLLBACK, existing_automations
from infra.deploy import TRAINING, deploy_all
from tests.conftest import ROOT, WebhookReceiver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def message(receiver: WebhookReceiver, subject_part: str) -> dict:
    """The first notification whose subject holds `subject_part` (waiting up to a minute)."""
    return receiver.wait_for(lambda got: next((m for m in got if subject_part in m.get("subject", "")), None), 60)


async def _automation_names() -> list[str]:
    async with get_client() as client:
        return sorted(name for name, ids in (await existing_automations(client)).items() for _ in ids)


def test_failures_retrains_and_rollbacks_notify_a_webhook(prefect_server) -> None:
    receiver = WebhookReceiver()
    try:
        deployed = deploy_all(ROOT, notify_url=receiver.url)
        assert {f"automation {name}" for name in (FAILED, RETRAIN, ROLLBACK)} <= set(deployed)
        deploy_all(ROOT)  # again, without a URL: the saved block is used; replaced, not doubled
        notifications = [name for name in asyncio.run(_automation_names()) if name.startswith("gradus:")]
        assert notifications == sorted([FAILED, RETRAIN, ROLLBACK])  # (the release trigger is an automation too)

        emit_event(event=DRIFT_RETRAIN, resource={"prefect.resource.id": "gradus.batch.abc"},
                   payload={"reason": "drift on batch incoming.jsonl: 3 of 7 signals drifted", "flow_run": "r-1"})
        retrain = message(receiver, "drift started a retrain")
        assert "3 of 7 signals drifted" in retrain["body"] and retrain["source"] == "gradus"

        run = run_deployment(f"training_pipeline/{TRAINING}", timeout=0)

        async def fail() -> None:
            async with get_client() as client:
                await client.set_flow_run_state(run.id, Failed(message="stage train failed: out of memory"),
                                                force=True)

        asyncio.run(fail())
        failed = message(receiver, f"gradus: {run.name} Failed")
        assert "training-pipeline" in failed["body"] and "out of memory" in failed["body"]

        emit_event(event=RELEASE_ROLLED_BACK, resource={"prefect.resource.id": "gradus.release.v123"},
                   payload={"version": "v0123456789ab", "reasons": "agreement 0.62 < 0.90"})
        rollback = message(receiver, "release of v0123456789ab rolled back")
        assert "agreement 0.62" in rollback["body"]
        assert len([m for m in receiver.received if "retrain" in m["subject"]]) == 1  # one event, one message
    finally:
        receiver.close()
