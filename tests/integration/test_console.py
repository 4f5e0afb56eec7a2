"""The web console (``/console``) in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium), against the real app on a real port: a tenant signs in, adds a webhook endpoint, creates a deployment, runs
a prediction in "try it", sees the usage chart change, downloads the invoice, creates and revokes a key, reads the
endpoint's delivery log and signs out; a narrower key, signed in with the keyboard alone, sees only its pages. Every
page passes an axe scan with no serious or critical violation and is photographed at 1280 and 390 px width into
``$CLOUDEASYML_SCREENSHOTS`` (default: the test's temporary directory).

Skipped without the browser and its driver, except in CI (``CI=true``), where it fails instead: ``.ci/run`` installs
them (``scripts/ensure_chromium.sh``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings
from tests.conftest import bearer, new_tenant
from tests.support import tiny_model
from tests.support.live_server import serve_in_thread
from tests.support.template_db import TEMPLATES
from tests.support.webhooks import LOOPBACK

pytestmark = pytest.mark.browser

try:
    import cloudeasyml_housing as HOUSING
except ImportError:  # the bundled plugin is not installed
    HOUSING = None

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTHS = (1280, 390)
# Generous: the first prediction loads the model on a machine shared with other test runs.
WAIT_S = 60.0


def _require_browser() -> None:
    """Skip without Chromium, its driver or Selenium; in CI (``CI=true``), where ``.ci/run`` installs them, fail."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import axe_core_python  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as error:
        missing.append(str(error))
    if not missing:
        return
    what = f"{', '.join(missing)} missing (scripts/ensure_chromium.sh installs Debian's chromium and chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; CI must run the console's browser tests")
    pytest.skip(what)


@dataclass(frozen=True)
class Live:
    base_url: str
    key: str


@pytest.fixture(name="live", scope="module")
def fx_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One real server for the module: SQLite, the tiny model, a tenant with its owner's admin key."""
    _require_browser()
    root = tmp_path_factory.mktemp("console")
    url = TEMPLATES.sqlite(root / "console.db")
    tenant = asyncio.run(new_tenant(url, "console"))
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    if HOUSING is not None:  # its schema has a $ref and booleans: the try-it form test uses it, never predicts
        pm.register(HOUSING, name="housing")
    tiny_model.seed_graph(root / "art")
    settings = Settings(
        database=DatabaseSettings(url=url),
        runtime=RuntimeSettings(artifact_dir=str(root / "art")),
        webhooks=LOOPBACK,  # an endpoint on this server itself, for the delivery log
        home=str(root),
    )
    with serve_in_thread(create_app(settings, pm)) as address:
        yield Live(base_url=f"http://{address}", key=tenant.key)


@pytest.fixture(name="downloads", scope="module")
def fx_downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser saves what the console downloads (invoices)."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(name="browser", scope="module")
def fx_browser(live: Live, downloads: Path) -> Iterator[Any]:
    """One headless Chromium for the module, its console messages kept (to find CSP violations and script errors)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(name="screenshots", scope="module")
def fx_screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go: ``$CLOUDEASYML_SCREENSHOTS``, or a temporary directory."""
    configured = os.environ.get("CLOUDEASYML_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Console:
    """The browser on the console, with the few moves the tests make."""

    def __init__(self, driver: Any, live: Live, screenshots: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.live, self.screenshots, self.by = driver, live, screenshots, By

    def wait(self, condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # an element not there yet, or replaced while read
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
            time.sleep(0.1)

    def find(self, element_id: str) -> Any:
        return self.driver.find_element(self.by.ID, element_id)

    def visible(self, element_id: str) -> Any:
        return self.wait(lambda: self.find(element_id).is_displayed() and self.find(element_id), what=element_id)

    def text(self, element_id: str) -> str:
        return str(self.find(element_id).text)

    def idle(self) -> None:
        """Wait until the page has no load or action in flight (``<main aria-busy>``)."""
        self.wait(lambda: self.find("main").get_attribute("aria-busy") == "false", what="the page to be idle")

    def go(self, page: str) -> None:
        self.driver.find_element(self.by.CSS_SELECTOR, f'#nav a[data-page="{page}"]').click()
        self.visible(f"page-{page}")
        self.idle()

    def click(self, label: str) -> None:
        """Click the button labelled ``label`` once the page is idle (a list re-rendered meanwhile is found again)."""
        self.idle()

        def clicked() -> bool:
            self.driver.find_element(self.by.CSS_SELECTOR, f'button[aria-label="{label}"]').click()
            return True

        self.wait(clicked, what=label)

    def fill(self, element_id: str, value: str) -> None:
        field = self.find(element_id)
        field.clear()
        field.send_keys(value)

    def check_page(self, name: str) -> None:
        """An axe scan with no serious or critical violation, and a screenshot at each width."""
        from axe_core_python.selenium import Axe

        self.idle()
        bad = []
        for width in WIDTHS:
            self.driver.set_window_size(width, 900)
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(width, min(max(int(height) + 140, 700), 2400))
            self.driver.save_screenshot(str(self.screenshots / f"{name}-{width}.png"))
            results = Axe().run(self.driver)
            bad += [
                (width, v["id"], v["impact"], [(n["target"], n["failureSummary"]) for n in v["nodes"]][:3])
                for v in results["violations"]
                if v["impact"] in ("serious", "critical")
            ]
        self.driver.set_window_size(1280, 900)
        assert not bad, f"{name}: {bad}"

    def sign_in(self, key: str) -> None:
        self.driver.get(f"{self.live.base_url}/console")
        self.visible("signin-form")
        self.fill("signin-key", key)
        self.find("signin-form").submit()
        self.visible("page-models")
        self.visible("sign-out")

    def chart_total(self) -> float:
        svg = self.driver.find_element(self.by.CSS_SELECTOR, "#usage-chart svg.bars")
        return float(svg.get_attribute("data-total"))

    def problems_in_the_log(self) -> list[str]:
        """Console messages of a CSP violation or an uncaught script error."""
        messages = [entry["message"] for entry in self.driver.get_log("browser")]
        return [m for m in messages if "Content Security Policy" in m or "Uncaught" in m]


@pytest.fixture(name="console")
def fx_console(browser: Any, live: Live, screenshots: Path) -> Iterator[Console]:
    console = Console(browser, live, screenshots)
    yield console
    console.driver.execute_script("sessionStorage.clear()")


def test_a_tenant_signs_in_deploys_predicts_manages_keys_sees_usage_and_signs_out(
    console: Console, live: Live, downloads: Path
) -> None:
    from selenium.webdriver.support.ui import Select

    driver = console.driver
    driver.get(f"{live.base_url}/console")
    console.visible("signin-form")
    console.check_page("signin")
    # A wrong key is refused on the sign-in form and nothing is stored.
    console.fill("signin-key", "sk_0123456789abcdef.wrong")
    console.find("signin-form").submit()
    console.wait(lambda: console.text("signin-error"), what="the sign-in error")
    assert driver.execute_script("return sessionStorage.length") == 0

    console.sign_in(live.key)
    assert driver.execute_script("return sessionStorage.length") == 1
    assert driver.execute_script("return localStorage.length") == 0 and driver.get_cookies() == []
    assert live.key not in driver.current_url
    console.wait(lambda: "tiny" in console.text("models-list"), what="the catalog")
    # A reload keeps the tab signed in (sessionStorage lives as long as the tab).
    driver.refresh()
    console.visible("page-models")
    console.wait(lambda: "tiny" in console.text("models-list"), what="the catalog after a reload")
    console.check_page("models")
    assert console.text("whoami").startswith("Key sk_") and "admin" in console.text("whoami")
    assert live.key.split(".")[1] not in driver.page_source

    # Usage before any prediction: nothing in the range.
    console.go("usage")
    console.wait(lambda: console.chart_total() == 0, what="the empty usage chart")

    # A webhook endpoint for deployment.ready: its secret shown once. It points at this server's /health, which
    # answers a POST with 405, so its delivery log shows a failed attempt.
    console.go("webhooks")
    console.fill("webhook-url", f"{live.base_url}/health")
    console.fill("webhook-events", "deployment.ready")
    console.find("webhook-form").submit()
    secret = console.wait(lambda: console.find("new-secret-value").get_attribute("value"), what="the secret")
    assert secret.startswith("whsec_")
    console.find("new-secret-done").click()
    console.wait(lambda: "/health" in console.text("webhooks-table"), what="the endpoint in the list")

    # A deployment from the catalog, then a prediction in "try it".
    console.go("models")
    driver.find_element(console.by.CSS_SELECTOR, 'a[aria-label="Deploy tiny"]').click()  # opens Deployments
    console.visible("page-deployments")
    console.idle()
    console.wait(lambda: console.find("deployment-model").get_attribute("value") == "tiny", what="the chosen model")
    console.fill("deployment-name", "scorer")
    console.find("deployment-form").submit()
    console.wait(lambda: "scorer" in console.text("deployments-table"), what="the new deployment")
    console.visible("tryit-form")
    assert console.find("tryit-field-x").get_attribute("value")  # prefilled from the model's exampleInput
    console.fill("tryit-field-x", "1")
    console.fill("tryit-field-y", "2")
    console.find("tryit-form").submit()
    console.visible("tryit-result")
    expected = tiny_model.numpy_forward(tiny_model.TinyModel().load_weights(), np.array([[1.0, 2.0]], dtype=np.float32))
    assert f'"score": {float(expected[0]):.5f}'[:-1] in console.text("tryit-prediction")
    figures = console.text("tryit-figures")
    assert "Cost" in figures and "Round trip" in figures and "Processing" in figures
    curl, python = console.text("tryit-curl"), console.text("tryit-python")
    assert "/predict" in curl and "$CLOUDEASYML_API_KEY" in curl and live.key not in curl + python
    assert "client.deployments.predict(" in python
    console.check_page("deployments")

    # A batch job over the API, for the Batch jobs page to show with its progress.
    lines = b'{"input": {"x": 1, "y": 2}}\n{"input": {"x": 0, "y": 3}}\n'
    upload = httpx.post(
        f"{live.base_url}/files?filename=in.jsonl",
        content=lines,
        headers={**bearer(live.key), "Content-Type": "application/jsonl"},
    )
    assert upload.status_code == 201, upload.text
    deployment_id = driver.execute_script("return document.getElementById('tryit-deployment').value")
    job = httpx.post(
        f"{live.base_url}/batches",
        json={"deploymentId": deployment_id, "inputFileId": upload.json()["id"]},
        headers=bearer(live.key),
    )
    assert job.status_code == 201, job.text

    # The usage chart changes: the prediction is counted (usage is written behind the answers, so it is polled).
    console.go("usage")

    def counted() -> bool:
        console.find("usage-form").submit()
        console.idle()
        return console.chart_total() >= 1

    console.wait(counted, what="the prediction in the usage chart")
    assert driver.find_elements(console.by.CSS_SELECTOR, "#usage-chart svg.bars rect[data-series='tiny']")
    # By deployment: the series is the deployment's name.
    Select(console.find("usage-by")).select_by_value("deployment")
    console.idle()
    console.wait(
        lambda: driver.find_elements(console.by.CSS_SELECTOR, "#usage-chart svg.bars rect[data-series='scorer']"),
        what="the chart by deployment",
    )
    Select(console.find("usage-by")).select_by_value("model")
    console.idle()
    assert "No cap" in console.text("quota") or "no cap" in console.text("quota")
    console.wait(lambda: "PDF" in console.text("invoices-table"), what="this month's invoice")
    console.check_page("usage")
    month = time.strftime("%Y-%m", time.gmtime())
    console.click(f"Download the invoice of {month} (PDF)")
    pdf = downloads / f"invoice-{month}.pdf"
    console.wait(lambda: pdf.exists() and pdf.read_bytes().startswith(b"%PDF"), what="the invoice's PDF")
    assert console.text("invoices-error") == ""

    # A key: created with scopes and a rate limit, shown once with a copy button, listed, revoked.
    console.go("keys")
    console.visible("key-form")
    console.fill("key-name", "reader")
    console.find("scope-predict").click()  # on by default
    console.find("scope-usage-read").click()
    console.fill("key-rate", "60")
    # datetime-local's typed format depends on the locale: set its value as the page would read it.
    driver.execute_script("document.getElementById('key-expiry').value = '2031-01-02T03:04'")
    console.find("key-form").submit()
    new_key = console.wait(lambda: console.find("new-key-value").get_attribute("value"), what="the new key")
    assert new_key.startswith("sk_")
    assert httpx.get(f"{live.base_url}/usage/quota", headers=bearer(new_key)).status_code == 200
    listed = {k["name"]: k for k in httpx.get(f"{live.base_url}/api-keys", headers=bearer(live.key)).json()}
    assert listed["reader"]["scopes"] == ["usage:read"] and listed["reader"]["rateLimitPerMinute"] == 60
    assert listed["reader"]["expiresAt"].startswith("2031-01-0")  # local time, sent in UTC
    console.find("new-key-copy").click()
    console.find("new-key-done").click()
    assert console.find("new-key-value").get_attribute("value") == "" and not console.find("new-key").is_displayed()
    console.wait(lambda: "reader" in console.text("keys-table"), what="the key in the list")
    console.check_page("keys")
    console.click("Revoke reader")
    console.wait(lambda: driver.switch_to.alert, what="the confirmation").accept()
    console.wait(lambda: "revoked" in console.text("keys-table"), what="the revoked key")
    assert httpx.get(f"{live.base_url}/usage/quota", headers=bearer(new_key)).status_code == 401

    # The model loaded for the prediction: deployment.ready went to the endpoint, which answered 405.
    console.go("webhooks")

    def delivered() -> bool:
        console.click(f"Deliveries to {live.base_url}/health")
        console.idle()
        return "405" in console.text("deliveries-table")

    console.wait(delivered, what="the delivery in the log")
    console.check_page("webhooks")

    def finished() -> bool:
        console.go("batches")
        return "2 / 2" in console.text("batches-table") and "completed" in console.text("batches-table")

    console.wait(finished, what="the batch job's progress")
    console.check_page("batches")

    # Delete the deployment, then sign out: the key leaves the tab and the pages empty.
    console.go("deployments")
    console.click("Delete scorer")
    console.wait(lambda: driver.switch_to.alert, what="the confirmation").accept()
    console.wait(lambda: "scorer" not in console.text("deployments-table"), what="the deletion")
    console.find("sign-out").click()
    console.visible("signin-form")
    assert driver.execute_script("return sessionStorage.length") == 0
    assert not console.find("nav").is_displayed() and console.text("models-list") == ""
    driver.get(f"{live.base_url}/console#/keys")
    console.visible("signin-form")
    assert console.problems_in_the_log() == []


def test_a_narrow_key_sees_only_what_its_scopes_allow_signing_in_with_the_keyboard(
    console: Console, live: Live
) -> None:
    from selenium.webdriver.common.keys import Keys

    made = httpx.post(
        f"{live.base_url}/api-keys",
        json={"name": "watcher", "scopes": ["deployments:read", "usage:read"]},
        headers=bearer(live.key),
    )
    assert made.status_code == 201, made.text
    driver = console.driver
    driver.get(f"{live.base_url}/console")
    console.visible("signin-form")
    # Keyboard only: the skip link comes first, then the key's field; Enter signs in. Focus is always visible.
    body = driver.find_element(console.by.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "skip"
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert driver.switch_to.active_element.get_attribute("id") == "main"
    driver.switch_to.active_element.send_keys(Keys.TAB)
    field = driver.switch_to.active_element
    assert field.get_attribute("id") == "signin-key"
    assert field.value_of_css_property("outline-style") != "none"
    field.send_keys(made.json()["key"], Keys.ENTER)
    console.visible("page-models")
    console.idle()
    links = console.driver.find_elements(console.by.CSS_SELECTOR, "#nav a")
    shown = {link.get_attribute("data-page") for link in links if link.is_displayed()}
    assert shown == {"models", "deployments", "usage"}
    console.go("usage")
    console.wait(lambda: console.find("usage-chart").find_elements(console.by.TAG_NAME, "svg"), what="the chart")
    # It cannot list keys, so the console does not know its scopes: the create form is offered, and the API's 403
    # disables it. "Try it" needs predict, which it lacks (GET /batches answered 403): it says so.
    console.go("deployments")
    assert console.find("tryit-denied").is_displayed() and not console.find("tryit-form").is_displayed()
    console.find("deployment-form").submit()
    console.wait(lambda: "403" in console.text("deployment-error"), what="the refusal")
    assert not console.find("deployment-model").is_enabled()
    # A page it may not read says so instead of failing.
    console.driver.get(f"{live.base_url}/console#/keys")
    console.visible("keys-denied")
    assert not console.find("key-form").is_displayed()
    # Revoked meanwhile (by the owner, over the API): the next call's 401 signs the tab out and says why.
    revoked = httpx.delete(f"{live.base_url}/api-keys/{made.json()['keyId']}", headers=bearer(live.key))
    assert revoked.status_code == 204, revoked.text
    driver.find_element(console.by.CSS_SELECTOR, '#nav a[data-page="usage"]').click()
    console.visible("signin-form")
    assert "Signed out" in console.text("signin-error")
    assert driver.execute_script("return sessionStorage.length") == 0 and console.text("usage-totals") == ""
    assert console.problems_in_the_log() == []


@pytest.mark.skipif(HOUSING is None, reason="the housing plugin is not installed")
def test_try_it_renders_a_form_from_the_input_schema_prefilled_with_the_example(console: Console, live: Live) -> None:
    made = httpx.post(
        f"{live.base_url}/deployments", json={"modelName": "housing", "name": "houses"}, headers=bearer(live.key)
    )
    assert made.status_code == 201, made.text
    example = httpx.get(f"{live.base_url}/models/housing", headers=bearer(live.key)).json()["exampleInput"]
    console.sign_in(live.key)
    console.go("deployments")
    console.click("Try it with houses")
    console.wait(lambda: console.find("tryit-field-driveway"), what="the housing form")
    for name, value in example.items():
        field = console.find(f"tryit-field-{name}")
        if isinstance(value, bool):
            assert field.get_attribute("type") == "checkbox" and field.is_selected() == value, name
        else:
            assert field.get_attribute("type") == "number" and float(field.get_attribute("value")) == value, name
    assert httpx.delete(f"{live.base_url}/deployments/{made.json()['id']}", headers=bearer(live.key)).status_code == 204
    console.find("sign-out").click()
    console.visible("signin-form")
