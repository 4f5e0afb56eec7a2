"""The console's operator view in a real headless Chromium (the fixtures and helpers of ``test_console``), against the
real app on a real port: an operator key signs in and gets the Tenants, Audit log and Plans pages instead of the
tenant's; creates a tenant (its owner key shown once), suspends it with a reason (its key is then refused with 403 over
the API), resumes it, changes its caps, finds the suspension in the audit log filtered by tenant and action, reads the
plans and deletes the tenant after the confirmation; older audit events come a page at a time. A tenant key never
sees the operator's pages. Every operator page passes an axe scan and is photographed at 1280 and 390 px width
(``$CLOUDEASYML_SCREENSHOTS``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, Settings
from tests.conftest import bearer, new_tenant
from tests.integration.test_console import (  # noqa: F401 (fixtures used by name)
    Console,
    Live,
    _require_browser,
    fx_browser,
    fx_downloads,
    fx_screenshots,
)
from tests.integration.test_operator_api import operator_key
from tests.support.live_server import serve_in_thread
from tests.support.template_db import TEMPLATES

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class OperatorLive(Live):
    operator_key: str


@pytest.fixture(name="live", scope="module")
def fx_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorLive]:
    """One real server for the module (SQLite, no models): a tenant with its admin key, and an operator key."""
    _require_browser()
    root = tmp_path_factory.mktemp("operator-console")
    url = TEMPLATES.sqlite(root / "console.db")
    tenant = asyncio.run(new_tenant(url, "console"))
    ops = asyncio.run(operator_key(url))
    settings = Settings(database=DatabaseSettings(url=url), home=str(root))
    with serve_in_thread(create_app(settings, get_plugin_manager(load_entrypoints=False))) as address:
        yield OperatorLive(base_url=f"http://{address}", key=tenant.key, operator_key=ops)


@pytest.fixture(name="console")
def fx_console(browser: Any, live: OperatorLive, screenshots: Path) -> Iterator[Console]:
    console = Console(browser, live, screenshots)
    yield console
    console.driver.execute_script("sessionStorage.clear()")


def _row(console: Console, name: str, table: str = "tenants-table") -> str:
    """The text of the row of ``name`` in the table in ``table`` ("" when there is none)."""
    for row in console.driver.find_elements(console.by.CSS_SELECTOR, f"#{table} tbody tr"):
        cells = row.find_elements(console.by.TAG_NAME, "td")
        if cells and cells[0].text == name:
            return str(row.text)
    return ""


def test_an_operator_manages_tenants_reads_the_audit_log_and_the_plans(console: Console, live: OperatorLive) -> None:
    from selenium.webdriver.support.ui import Select

    driver = console.driver
    driver.get(f"{live.base_url}/console#/models")
    console.visible("signin-form")
    console.fill("signin-key", live.operator_key)
    console.find("signin-form").submit()
    # The operator's pages, and only those: a tenant page asked for in the URL opens the tenants instead.
    console.visible("page-tenants")
    console.idle()
    links = driver.find_elements(console.by.CSS_SELECTOR, "#nav a")
    assert {link.get_attribute("data-page") for link in links if link.is_displayed()} == {"tenants", "audit", "plans"}
    assert driver.current_url.endswith("#/tenants")
    assert console.text("whoami") == f"Key {live.operator_key.split('.')[0]} (operator)"
    ops = bearer(live.operator_key)
    pro = {"name": "pro", "description": "Paid", "rateLimitPerMinute": 600, "spendCap": "100", "maxDeployments": 20}
    made = httpx.post(f"{live.base_url}/plans", json={**pro, "prices": {"tiny": {"perRequest": "0.002"}}}, headers=ops)
    assert made.status_code == 201, made.text
    console.wait(lambda: _row(console, "console"), what="the tenant in the list")

    # A new tenant: its owner key shown once, and it works.
    console.fill("tenant-name", "acme")
    console.fill("tenant-email", "boss@acme.test")
    console.fill("tenant-requests", "500")
    console.find("tenant-form").submit()
    owner = console.wait(lambda: console.find("new-owner-key-value").get_attribute("value"), what="the owner key")
    assert owner.startswith("sk_") and httpx.get(f"{live.base_url}/usage", headers=bearer(owner)).status_code == 200
    console.find("new-owner-key-done").click()
    assert console.find("new-owner-key-value").get_attribute("value") == ""
    console.wait(lambda: "500" in _row(console, "acme") and "active" in _row(console, "acme"), what="acme listed")
    console.check_page("tenants")

    # Suspended with a reason: every call of its key is refused with 403 and the reason.
    console.click("Suspend acme")
    console.visible("suspend-form")
    assert driver.switch_to.active_element.get_attribute("id") == "suspend-reason"  # focus moves to the form
    console.fill("suspend-reason", "unpaid invoice")
    console.find("suspend-form").submit()
    console.wait(lambda: "suspended" in _row(console, "acme"), what="the suspension")
    assert "unpaid invoice" in _row(console, "acme") and not console.find("suspend-form").is_displayed()
    refused = httpx.get(f"{live.base_url}/usage", headers=bearer(owner))
    assert refused.status_code == 403 and "unpaid invoice" in refused.text, refused.text
    assert httpx.get(f"{live.base_url}/usage", headers=bearer(live.key)).status_code == 200  # others unaffected
    console.check_page("tenants-suspended")

    console.click("Resume acme")
    console.wait(lambda: "active" in _row(console, "acme"), what="the resumption")
    assert httpx.get(f"{live.base_url}/usage", headers=bearer(owner)).status_code == 200

    # Its plan and caps: an emptied cap is removed, a given one set. Cancel puts the focus back on the button.
    console.click("Change plan or caps of acme")
    console.visible("tenant-edit-form")
    assert driver.switch_to.active_element.get_attribute("id") == "tenant-edit-plan"
    console.find("tenant-edit-cancel").click()
    assert not console.find("tenant-edit-form").is_displayed()
    assert driver.switch_to.active_element.get_attribute("aria-label") == "Change plan or caps of acme"
    console.click("Change plan or caps of acme")
    console.visible("tenant-edit-form")
    console.check_page("tenants-change")
    Select(console.find("tenant-edit-plan")).select_by_value("pro")
    console.fill("tenant-edit-spend", "25.5")
    console.find("tenant-edit-requests").clear()
    console.find("tenant-edit-form").submit()
    console.wait(lambda: "25.5" in _row(console, "acme"), what="the new caps")
    acme = next(t for t in httpx.get(f"{live.base_url}/operator/tenants", headers=ops).json() if t["name"] == "acme")
    assert acme["plan"] == "pro" and acme["spendCap"] == "25.5" and acme["requestCap"] is None

    # The audit log lists the suspension, with who, the reason, and filtered by tenant and action.
    console.go("audit")
    console.wait(lambda: "tenant.suspended" in console.text("audit-table"), what="the suspension in the log")
    console.check_page("audit")
    Select(console.find("audit-tenant")).select_by_visible_text("acme")
    console.fill("audit-action", "tenant.suspended")
    console.find("audit-form").submit()
    console.idle()

    def only_the_suspension() -> bool:
        rows = driver.find_elements(console.by.CSS_SELECTOR, "#audit-table tbody tr")
        return len(rows) == 1 and "unpaid invoice" in rows[0].text and live.operator_key.split(".")[0] in rows[0].text

    console.wait(only_the_suspension, what="the filtered log")

    console.go("plans")
    console.wait(lambda: "default" in console.text("plans-table"), what="the plans")
    assert "600/min" in console.text("plans-table") and "0.002" in console.text("plans-table")
    console.check_page("plans")

    # Deleted after the confirmation: its key no longer exists.
    console.go("tenants")
    console.click("Delete acme")
    console.wait(lambda: driver.switch_to.alert, what="the confirmation").accept()
    console.wait(lambda: not _row(console, "acme") and _row(console, "console"), what="the deletion")
    assert httpx.get(f"{live.base_url}/usage", headers=bearer(owner)).status_code == 401

    console.find("sign-out").click()
    console.visible("signin-form")
    assert console.text("tenants-table") == "" and console.text("audit-table") == ""
    assert console.problems_in_the_log() == []


def test_an_operator_creates_a_plan_and_changes_only_what_was_changed(console: Console, live: OperatorLive) -> None:
    from selenium.webdriver.support.ui import Select

    driver = console.driver
    ops = bearer(live.operator_key)
    driver.get(f"{live.base_url}/console#/plans")
    console.visible("signin-form")
    console.fill("signin-key", live.operator_key)
    console.find("signin-form").submit()
    console.visible("page-plans")  # the page the URL asked for
    console.wait(lambda: _row(console, "default", "plans-table"), what="the plans")

    # Created from the form: what was left empty is absent (the server's defaults).
    console.fill("plan-name", "team")
    console.fill("plan-description", "For small teams")
    console.fill("plan-rate", "120")
    console.fill("plan-spend", "50")
    console.fill("plan-prices", '{"tiny": {"perRequest": "0.003"}}')
    console.find("plan-form").submit()
    console.wait(lambda: "120/min" in _row(console, "team", "plans-table"), what="the new plan")
    team = httpx.get(f"{live.base_url}/plans/team", headers=ops).json()
    assert team["description"] == "For small teams" and team["spendCap"] == "50" and team["requestCap"] is None
    assert team["prices"]["tiny"]["perRequest"] == "0.003" and team["maxDeployments"] is None

    # A bad price list is refused with the reason, and nothing changes.
    console.click("Change plan team")
    console.visible("plan-form")
    assert driver.switch_to.active_element.get_attribute("id") == "plan-description"
    assert console.find("plan-name").get_attribute("readonly") is not None
    console.fill("plan-prices", "{not json")
    console.find("plan-form").submit()
    console.wait(lambda: "not valid JSON" in console.text("plan-error"), what="the JSON error")
    console.check_page("plans-change")

    # Changed: a cap emptied is removed, a limit set, shadow billing on; the untouched prices stay as they were.
    console.find("plan-cancel").click()
    assert driver.switch_to.active_element.get_attribute("aria-label") == "Change plan team"
    console.click("Change plan team")
    console.find("plan-spend").clear()
    console.fill("plan-deployments", "7")
    Select(console.find("plan-shadow")).select_by_value("true")
    console.find("plan-form").submit()
    console.wait(
        lambda: "7" in _row(console, "team", "plans-table") and "50" not in _row(console, "team", "plans-table"),
        what="the change",
    )
    team = httpx.get(f"{live.base_url}/plans/team", headers=ops).json()
    assert team["spendCap"] is None and team["maxDeployments"] == 7 and team["billShadow"] is True
    assert team["prices"]["tiny"]["perRequest"] == "0.003" and team["rateLimitPerMinute"] == 120
    assert console.text("plan-form-title") == "Create a plan"

    # The audit log holds the change as the fields that changed, and nothing else.
    changes = [
        e
        for e in httpx.get(f"{live.base_url}/audit", params={"action": "plan.updated"}, headers=ops).json()["items"]
        if e["resourceId"] == "team"
    ]
    assert len(changes) == 1 and set(changes[0]["changes"]) == {"spendCap", "maxDeployments", "billShadow"}
    assert console.problems_in_the_log() == []


def test_a_tenant_key_never_sees_the_operator_pages(console: Console, live: OperatorLive) -> None:
    console.sign_in(live.key)
    console.idle()
    links = console.driver.find_elements(console.by.CSS_SELECTOR, "#nav a")
    shown = {link.get_attribute("data-page") for link in links if link.is_displayed()}
    assert "models" in shown and not shown & {"tenants", "audit", "plans"}
    console.driver.get(f"{console.live.base_url}/console#/tenants")
    console.visible("page-models")
    assert not console.find("page-tenants").is_displayed()
    console.find("sign-out").click()
    console.visible("signin-form")
    assert console.problems_in_the_log() == []


def test_the_audit_log_shows_older_events_a_page_at_a_time(console: Console, live: OperatorLive) -> None:
    from selenium.webdriver.support.ui import Select

    ops = bearer(live.operator_key)
    tenants = httpx.get(f"{live.base_url}/operator/tenants", headers=ops).json()
    tenant = next(t for t in tenants if t["name"] == "console")
    for cap in range(1000, 1055):  # 55 changes: a page of 50, then 5 older ones
        changed = httpx.patch(f"{live.base_url}/operator/tenants/{tenant['id']}", json={"requestCap": cap}, headers=ops)
        assert changed.status_code == 200, changed.text
    driver = console.driver
    driver.get(f"{live.base_url}/console#/audit")
    console.visible("signin-form")
    console.fill("signin-key", live.operator_key)
    console.find("signin-form").submit()
    console.visible("page-audit")
    console.idle()
    Select(console.find("audit-tenant")).select_by_visible_text("console")  # the other test's changes left out
    console.fill("audit-action", "tenant.updated")
    console.find("audit-form").submit()
    console.idle()
    rows = lambda: driver.find_elements(console.by.CSS_SELECTOR, "#audit-table tbody tr")  # noqa: E731
    console.wait(lambda: len(rows()) == 50, what="the first page")
    assert "1054" in rows()[0].text  # newest first
    console.find("audit-more").click()
    console.idle()
    console.wait(lambda: len(rows()) == 55, what="the older events")
    assert "1000" in rows()[-1].text and not console.find("audit-more").is_displayed()
    console.find("sign-out").click()
    console.visible("signin-form")
    assert console.problems_in_the_log() == []
