"""The operator's path through the real Temporal UI: find the waiting incident, read it, approve it.

`remedium up` runs for real (dev server, UI, worker, ingress); a signed PagerDuty webhook opens
the incident; headless Chromium then does what a person at the keyboard does: list, open, read the
current details, More Actions → Send a Signal → `approve` with
`{"step": "flush-cache", "by": "ui-operator"}`, Submit.
The remediation must then really happen, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from remedium.models import IncidentResult, IncidentStatus
from tests.support import TargetService
from tests.test_remedium_up import VECTOR, WORKFLOW_ID, Up, _wait_stage, api_incident_env

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page

# Where to keep the screenshots for a human to look at (unset: only in the test's tmp dir).
ARTIFACTS = os.environ.get("REMEDIUM_TEST_ARTIFACTS")
NAMESPACE = "default"
APPROVAL = {"step": "flush-cache", "by": "ui-operator"}


async def _reload_until_visible(
    page: Page, url: str, target: Locator, what: str, within_s: float = 120
) -> None:
    """Open `url`, reloading until `target` shows: the list and the details are eventually consistent."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    await page.goto(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    patience_ms = 5_000  # grows, so a page that is merely slow to load is not reloaded forever
    while True:
        try:
            await target.wait_for(state="visible", timeout=patience_ms)
            return
        except PlaywrightTimeout:
            if loop.time() > deadline:
                raise AssertionError(f"the UI never showed {what} at {url}") from None
            patience_ms = min(patience_ms * 2, 30_000)
            await page.reload()


def _list_url(ui: str, query: str) -> str:
    return f"{ui}/namespaces/{NAMESPACE}/workflows?query={quote(query)}"


def _row(page: Page) -> Locator:
    """The workflows-list row for our incident."""
    return (
        page.locator("tbody tr")
        .filter(
            has=page.get_by_test_id("workflows-summary-table-body-cell"),
        )
        .filter(has=page.get_by_role("link", name=WORKFLOW_ID, exact=True))
    )


def _current_details(page: Page) -> Locator:
    """The body of the UI's "Current Details" panel (our markdown, rendered in its own iframe)."""
    return page.frame_locator("#user-metadata-current-details").locator("body")


async def _send_approve_signal(page: Page) -> None:
    """More Actions → Send a Signal → pick `approve` → paste the data → Submit, as a person would."""
    from playwright.async_api import expect

    await page.get_by_role("button", name="More Actions").filter(visible=True).click()
    send = page.get_by_test_id("signal-button").filter(visible=True)
    await expect(send).to_have_text(re.compile("Send a Signal"))
    await expect(send).not_to_have_attribute("aria-disabled", "true")
    await send.click()

    modal = page.get_by_test_id("signal-confirmation-modal").filter(visible=True)
    await expect(modal).to_be_visible()
    await modal.get_by_test_id("signal-select-button").click()
    # filled from the workflow's own signal definitions (needs the worker): name + description
    option = page.get_by_role("option").filter(visible=True).filter(has_text=re.compile(r"^\s*approve\b"))
    await expect(option).to_contain_text("Approve the pending step")
    await option.click()
    await expect(modal.get_by_test_id("signal-select-button")).to_have_accessible_name("approve")

    # the editor auto-closes brackets and quotes, so typing key by key would corrupt the JSON
    editor = modal.get_by_role("textbox", name="Data")
    await editor.click()
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.press("Delete")
    await page.keyboard.insert_text(json.dumps(APPROVAL))
    assert json.loads(await editor.inner_text()) == APPROVAL

    # leaving the editor reformats it and the modal grows: focus Submit first, then click it
    submit = modal.get_by_test_id("confirm-modal-button")
    await submit.focus()
    await expect(submit).to_be_enabled()
    await submit.click()
    await expect(page.get_by_test_id("toast-live-region-polite")).to_contain_text("Workflow signaled.")
    await expect(modal).to_be_hidden()


def _keep(shot: Path) -> None:
    if ARTIFACTS and Path(ARTIFACTS).is_dir():
        shutil.copyfile(shot, Path(ARTIFACTS) / f"ui-{shot.name}")


@pytest.mark.timeout(400)
async def test_operator_approves_the_waiting_incident_in_the_temporal_ui(
    tmp_path: Path, ui_page: Page
) -> None:
    from playwright.async_api import expect

    page = ui_page
    vector = json.loads(VECTOR.read_text())
    target = TargetService().start()
    env = api_incident_env(tmp_path, target, vector["secrets"]["current"])
    shots = tmp_path / "screenshots"
    shots.mkdir()
    up = Up(tmp_path, env)
    await up.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{up.ingress}", timeout=20) as http:
            response = await http.post(
                "/webhooks/pagerduty", content=vector["raw_body"].encode(), headers=vector["http"]["headers"]
            )
        assert response.status_code == 202, response.text
        assert response.json()["workflow_id"] == WORKFLOW_ID

        client = await Client.connect(f"127.0.0.1:{up.temporal_port}", data_converter=pydantic_data_converter)
        handle = client.get_workflow_handle(WORKFLOW_ID, result_type=IncidentResult)
        await _wait_stage(handle, "awaiting_approval")
        assert target.deliveries == [], "nothing may touch the service before approval"

        ui = f"http://127.0.0.1:{up.ui_port}"
        try:
            # our search attributes are usable in the list: everything waiting for a human
            await _reload_until_visible(
                page, _list_url(ui, 'IncidentStage="awaiting_approval"'), _row(page), "the waiting incident"
            )

            # the operator's list, filtered by id: the incident is Running
            await _reload_until_visible(
                page, _list_url(ui, f'WorkflowId="{WORKFLOW_ID}"'), _row(page), "the incident's row"
            )
            await expect(_row(page).get_by_test_id("execution-status")).to_have_text(
                re.compile("running", re.IGNORECASE)
            )
            await _row(page).get_by_role("link", name=WORKFLOW_ID, exact=True).click()
            await expect(page.get_by_test_id("workflow-id-heading")).to_contain_text(WORKFLOW_ID)
            await expect(page.get_by_test_id("execution-status").filter(visible=True)).to_have_text(
                re.compile("running", re.IGNORECASE)
            )

            # what it is waiting for: our markdown, rendered (in an iframe) under "Current Details"
            await page.get_by_test_id("user-metadata-tab").click()
            await expect(page.get_by_role("heading", name="Current Details", exact=True)).to_be_visible()
            details = _current_details(page)
            await expect(details.get_by_role("heading", name="A little bump in the road")).to_be_visible()
            await expect(
                details.get_by_role("heading", name=re.compile(r"Waiting for approval of step\s*flush-cache"))
            ).to_be_visible()
            await expect(details.get_by_text(re.compile(r"Approvers: ui-operator, alice"))).to_be_visible()
            await page.screenshot(path=shots / "awaiting-approval.png")
            _keep(shots / "awaiting-approval.png")

            await _send_approve_signal(page)
        except BaseException:
            await page.screenshot(path=shots / "failure.png")
            raise

        result = await asyncio.wait_for(handle.result(), 120)
        assert result.outcome == "resolved", result.reason
        assert [(d.path, d.body) for d in target.deliveries] == [("/admin/restart", {"cache": "api"})]
        status = await handle.query("status", result_type=IncidentStatus)
        assert [(a.step, a.approved, a.by, a.via) for a in status.approvals] == [
            ("flush-cache", True, "ui-operator", "signal")
        ]

        # what the operator sees afterwards: the workflow done, the details saying so
        try:
            await _reload_until_visible(
                page,
                page.url,
                _current_details(page).get_by_text(re.compile(r"Outcome:\s*resolved")),
                "the resolved outcome in Current Details",
            )
            await expect(_current_details(page).get_by_text("approved by ui-operator")).to_be_visible()
            await expect(page.get_by_test_id("execution-status").filter(visible=True)).to_have_text(
                re.compile("completed", re.IGNORECASE)
            )
            await page.screenshot(path=shots / "after-approval.png")
            _keep(shots / "after-approval.png")

            # the audit trail in Event History names the signal the operator sent
            await page.get_by_test_id("history-tab").click()
            signaled = page.get_by_test_id("event-summary-row").filter(has_text=re.compile("Signaled"))
            await expect(signaled.filter(has_text="approve")).to_have_count(1)

            # and the queue of incidents waiting for a human is empty again
            await _reload_until_visible(
                page,
                _list_url(ui, 'IncidentStage="awaiting_approval"'),
                page.get_by_role("heading", name="No Workflows Found"),
                "an empty approval queue",
            )
        except BaseException:
            await page.screenshot(path=shots / "failure.png")
            raise
    finally:
        code = await up.stop()
        target.stop()
    assert code == 0, "".join(up.output)
