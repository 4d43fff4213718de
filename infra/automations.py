"""Prefect automations that tell people what the pipeline did, through a Prefect notification block.

    gradus deploy --notify-url https://hooks.example/...     (or GRADUS_NOTIFY_WEBHOOK in the environment)

A `CustomWebhookNotificationBlock` named `gradus-notify` is created (or updated) with that URL; the
automations send to whichever notification block has that name, so a Slack, Teams, PagerDuty or e-mail block
saved under `gradus-notify` in the UI works the same way (the next `gradus deploy` without a URL keeps it).

- a training, drift-monitor or release run of the gradus deployments Failed or Crashed;
- the drift monitor started a retrain (event `gradus.drift.retrain`, emitted by flows/drift.py);
- a release was rolled back (event `gradus.release.rolled-back`, emitted by the release flow).
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from gradus.events import DRIFT_RETRAIN as RETRAIN_EVENT
from gradus.events import RELEASE_ROLLED_BACK as ROLLBACK_EVENT

BLOCK_NAME = "gradus-notify"
NOTIFY_ENV = "GRADUS_NOTIFY_WEBHOOK"
FAILED, RETRAIN, ROLLBACK = "gradus: flow run failed", "gradus: drift started a retrain", "gradus: release rolled back"


async def ensure_block(url: str | None) -> UUID | None:
    """The notification block's id: created or updated from `url`; without one, a block of any notification
    type already saved as `gradus-notify`; None when there is neither."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    if url:
        block = CustomWebhookNotificationBlock(
            name=BLOCK_NAME, url=url,
            json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "gradus"})
        return await block.save(BLOCK_NAME, overwrite=True)
    async with get_client() as client:
        saved = [doc for doc in await client.read_block_documents(offset=0, limit=200) if doc.name == BLOCK_NAME]
    return saved[0].id if saved else None


def automations(block_id: UUID, deployment_ids: list[str]) -> list[Any]:
    """The three automations, each sending one notification per event it matches."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    def notify(subject: str, body: str) -> list[Any]:
        return [SendNotification(block_document_id=block_id, subject=subject, body=body)]

    def on(events: set[str], related: dict[str, Any] | None = None) -> EventTrigger:
        return EventTrigger(expect=events, match_related=related or {}, posture=Posture.Reactive, threshold=1,
                            within=0)

    deployments = {"prefect.resource.role": "deployment",
                   "prefect.resource.id": [f"prefect.deployment.{d}" for d in deployment_ids]}
    return [
        Automation(name=FAILED, description="A gradus deployment's flow run failed or crashed",
                   trigger=on({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}, deployments),
                   actions=notify("gradus: {{ flow_run.name }} {{ event.event.split('.')[-1] }}",
                                  "Flow run {{ flow_run.name }} of {{ deployment.name }} ended "
                                  "{{ event.event.split('.')[-1] }}: {{ flow_run.state.message }}")),
        Automation(name=RETRAIN, description="The drift monitor started a retrain",
                   trigger=on({RETRAIN_EVENT}),
                   actions=notify("gradus: drift started a retrain",
                                  "{{ event.payload.reason }} (training run {{ event.payload.flow_run }})")),
        Automation(name=ROLLBACK, description="A gradual release was rolled back",
                   trigger=on({ROLLBACK_EVENT}),
                   actions=notify("gradus: release of {{ event.payload.version }} rolled back",
                                  "{{ event.payload.reasons }}")),
    ]


async def ensure_automations(deployment_ids: list[str], url: str | None = None) -> dict[str, str]:
    """Create the automations, replacing earlier ones of the same names (idempotent); {} without a block."""
    from prefect.client.orchestration import get_client

    block_id = await ensure_block(url or os.environ.get(NOTIFY_ENV))
    if block_id is None:
        return {}
    created = {}
    async with get_client() as client:
        existing = await existing_automations(client)
        for automation in automations(block_id, deployment_ids):
            for old in existing.get(automation.name, []):
                await client.delete_automation(UUID(old))
            created[automation.name] = str((await automation.acreate()).id)
    return created


async def existing_automations(client: Any) -> dict[str, list[str]]:
    """{name: [id, ...]} of the server's automations. By the raw endpoint with explicit paging: prefect 3.8.8's
    client sends null limit and sort, which its own server rejects (HTTP 422)."""
    response = await client._client.post("/automations/filter",
                                         json={"sort": "CREATED_DESC", "limit": 200, "offset": 0})
    response.raise_for_status()
    found: dict[str, list[str]] = {}
    for automation in response.json():
        found.setdefault(automation["name"], []).append(automation["id"])
    return found
