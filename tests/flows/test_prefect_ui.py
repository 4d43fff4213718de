"""A retrain started by a person in the real Prefect UI: a Prefect server with its UI, the deployments and a
process worker; headless Chromium (Debian's, driven through its chromedriver by Selenium) opens the training
deployment, Run → Custom run, sets `epochs` in the typed form and submits; the flow run carries that value and
completes. Screenshots of the form and of the finished run go to test-artifacts/."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gradus.config.params import load_params
from gradus.workspace import newest_outputs
from infra.deploy import TRAINING, WORK_POOL, deploy_all
from tests.conftest import ROOT, tool_env
from tests.helpers.browser import ARTIFACTS, CHROMEDRIVER, CHROMIUM, browser, prefect_with_ui

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed (.ci/run "
                                            "installs them)")]


@pytest.fixture()
def prefect_ui(tmp_path: Path) -> Iterator[str]:
    with prefect_with_ui(tmp_path) as url:
        yield url


def custom_run(driver, deployment_url: str, epochs: str) -> str:
    """Run → Custom run, the typed overrides form, epochs set, Submit; the new flow run's id (from the toast)."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60)

    def click(xpath: str) -> None:
        element = wait.until(ec.element_to_be_clickable((By.XPATH, xpath)))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        try:
            element.click()
        except ElementClickInterceptedException:  # a button's own inner <div> "receives" the click
            driver.execute_script("arguments[0].click()", element)

    driver.get(deployment_url)
    click("//button[normalize-space()='Run']")
    click("//*[normalize-space()='Custom run']")
    click("//button[normalize-space()='TrainingOverrides']")  # overrides: from None to the typed form
    section = "//label[normalize-space()='Epochs (Optional)']/ancestor::div[.//button[normalize-space()='float']][1]"
    click(section + "//button[normalize-space()='float']")
    field = wait.until(ec.visibility_of_element_located((By.XPATH, section + "//input")))
    field.clear()
    field.send_keys(epochs)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
    driver.save_screenshot(str(ARTIFACTS / "prefect-ui-custom-run-form.png"))
    click("//button[normalize-space()='Submit']")
    click("//button[normalize-space()='View run']")  # the toast that confirms the scheduled run
    wait.until(ec.url_contains("/runs/flow-run/"))
    return driver.current_url.split("/runs/flow-run/")[1].split("?")[0]


def test_a_retrain_from_the_ui_custom_run_form(prefect_ui: str, project_repo: Path) -> None:
    from prefect.client.orchestration import get_client

    api = f"{prefect_ui}/api"
    deployment_id = deploy_all(project_repo)[TRAINING]
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser()
    try:
        run_id = custom_run(driver, f"{prefect_ui}/deployments/deployment/{deployment_id}", "2")
        # The run waits for a worker, as it would in production: a real process worker picks it up.
        worker = subprocess.run(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
             "--run-once"], cwd=ROOT, env=tool_env() | {"PREFECT_API_URL": api}, capture_output=True, text=True,
            timeout=600)

        async def read() -> object:
            async with get_client() as client:
                return await client.read_flow_run(run_id)

        deadline = time.monotonic() + 120
        while not (run := asyncio.run(read())).state.is_final() and time.monotonic() < deadline:
            time.sleep(2)
        assert run.state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
        assert run.parameters["overrides"]["epochs"] == 2
        work = newest_outputs(project_repo, load_params(project_repo / "params.yaml"))  # the run's workspace
        lock = yaml.safe_load((work / "dvc.lock").read_text())
        assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 2  # not tiny_params' 12
        assert load_params(project_repo / "params.yaml").train.epochs == 12  # the form's value stayed in the run
        driver.get(f"{prefect_ui}/runs/flow-run/{run_id}")
        time.sleep(3)  # the page draws the run's graph and logs
        driver.save_screenshot(str(ARTIFACTS / "prefect-ui-flow-run.png"))
        assert "Completed" in driver.page_source
    finally:
        driver.quit()
    assert (ARTIFACTS / "prefect-ui-custom-run-form.png").stat().st_size > 10_000
