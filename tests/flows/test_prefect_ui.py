"""A retrain started by a person in the real Prefect UI: a Prefect server with its UI, the deployments and a
process worker; headless Chromium (Debian's, driven through its chromedriver by Selenium) opens the training
deployment, Run → Custom run, sets `epochs` in the typed form and submits; the flow run carries that value and
completes. Screenshots of the form and of the finished run go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from cli.processes import free_port, start_until_ready
from gradus.config.params import load_params
from gradus.workspace import newest_outputs
from infra.deploy import TRAINING, WORK_POOL, deploy_all
from tests.conftest import ROOT, tool_env

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed (.ci/run "
                                            "installs them)")]


@contextmanager
def prefect_with_ui(folder: Path) -> Iterator[str]:
    """`prefect server start` (API and UI) on a free loopback port, its database in `folder`; this process (and
    its threads) talk to it while the context is open. Yields the UI's base URL."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = tool_env() | {"PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "PREFECT_API_URL": api}
    server = start_until_ready([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], f"{api}/health", folder / "prefect-server.log", timeout=120,
                               env=env)
    try:
        # As prefect_test_harness does: the settings also for threads (the release flow runs in one).
        with temporary_settings(updates={PREFECT_API_URL: api}), \
                prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
            yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


@pytest.fixture()
def prefect_ui(tmp_path: Path) -> Iterator[str]:
    with prefect_with_ui(tmp_path) as url:
        yield url


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


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


def resume_in_ui(driver, flow_run_url: str, decision: str, comment: str) -> None:
    """The paused run's page, Resume, the typed approval form (decision, comment), Submit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 60)
    driver.get(flow_run_url)
    wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Resume']"))).click()
    field = "//label[starts-with(normalize-space(), '{}')]/ancestor::div[.//{}][1]//{}"  # "(Optional)" or not
    Select(wait.until(ec.visibility_of_element_located(
        (By.XPATH, field.format("Decision", "select", "select"))))).select_by_visible_text(decision)
    driver.find_element(By.XPATH, field.format("Comment", "textarea", "textarea")).send_keys(comment)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "prefect-ui-release-approval.png"))
    driver.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()


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
