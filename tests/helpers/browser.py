"""A Prefect server with its UI, and headless Chromium driving it (Debian's chromium through its chromedriver,
by Selenium): shared by the UI retrain test and the release approval test."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli.processes import free_port, start_until_ready
from tests.conftest import ROOT, tool_env

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = ROOT / "test-artifacts"


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


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


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
