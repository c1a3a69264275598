"""The README's "Writing an integration" example works when copied alone into `activities/`.

The file is taken from the README itself (and must equal `examples/statuspage.py`), dropped
into a temporary copy of the product with no other edit, and used the way an author would:
`remedium runbook validate`, `remedium runbook test`, then dry run / execute / rollback
through the worker's own catalog and bindings against a fake status page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import CLI, ONLY_THE_COPY, REPO, copy_product

RUNBOOK = """\
apiVersion: remedium/v1
kind: Runbook
metadata:
  name: checkout-notice
  description: Tell users checkout is degraded while someone looks.
match:
  service: ["checkout"]
plan:
  - id: notice
    action: statuspage.post_notice
    risk: low
    with:
      component: "{{ alert.service }}"
      message: "Investigating: {{ alert.title }}"
verify:
  checks:
    - id: page
      kind: http
      with: {url: "https://status.example.com/components/{{ alert.service }}"}
  success: ["facts.page.ok"]
"""

ALERT = '{"source": "manual", "id": "co-1", "title": "checkout errors", "service": "checkout"}'

# Run inside the copy: the worker's catalog discovers the file; a fake status page answers.
DRIVE = """\
import asyncio, json
import httpx
from remedium.bindings import params_of
from remedium.catalog import Clients, action_catalog
from remedium.models import ActionRequest, RollbackRequest

notices = {}

def page(request):
    component = request.url.path.split("/")[2]
    if request.method == "GET":
        return httpx.Response(200, json={"message": notices.get(component)})
    if request.method == "PUT":
        notices[component] = json.loads(request.content)["message"]
    else:
        notices.pop(component, None)
    return httpx.Response(204)

async def main():
    async with httpx.AsyncClient(transport=httpx.MockTransport(page), base_url="http://page") as api:
        action_cls = action_catalog()["statuspage.post_notice"]
        action = action_cls.build(Clients(statuspage=api))
        params = {"component": "checkout", "message": "Investigating"}
        request = ActionRequest(incident_id="incident-manual-co-1", step_id="notice",
                                action=action_cls.name, params=params)
        params = params_of(action_cls.params_model, request.params, action_cls.name)
        print("dry:", (await action.dry_run(request, params)).summary, notices)
        result = await action.execute(request, params)
        print("executed:", result.summary, notices)
        again = await action.execute(request, params)
        print("again changed:", again.changed)
        rollback = RollbackRequest(incident_id=request.incident_id, checkpoint=result.checkpoint)
        undone = await action.rollback(rollback)
        print("rolled back:", undone.summary, notices)

asyncio.run(main())
"""


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Writing an integration", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's 'Writing an integration' has no python block"
    return str(blocks[0])


def remedium(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    env.pop("REMEDIUM_POLICY_FILE", None)
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The product copied alone, as a fresh checkout would have it."""
    root = copy_product(tmp_path / "checkout")
    (root / "notice.yaml").write_text(RUNBOOK)
    (root / "alert.json").write_text(ALERT)
    return root


def test_readme_example_is_the_shipped_example_file() -> None:
    assert readme_example() == (REPO / "examples" / "statuspage.py").read_text()


def test_without_the_file_the_action_is_unknown(checkout: Path) -> None:
    """The control: the copy alone does not know the action, so the next test proves the file does it."""
    result = remedium(checkout, "runbook", "validate", "notice.yaml")
    assert result.returncode == 1
    assert "statuspage.post_notice" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_copied_alone_it_validates_dry_runs_and_acts(checkout: Path) -> None:
    (checkout / "activities" / "statuspage.py").write_text(readme_example())

    validated = remedium(checkout, "runbook", "validate", "notice.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    tried = remedium(checkout, "runbook", "test", "notice.yaml", "--alert", "alert.json")
    assert tried.returncode == 0, tried.stdout + tried.stderr
    assert "1. notice: statuspage.post_notice, risk low" in tried.stdout
    assert (
        "dry run on statuspage/checkout: would post notice on checkout: 'Investigating: checkout errors'"
        in (tried.stdout)
    )

    driven = subprocess.run(
        [sys.executable, "-c", ONLY_THE_COPY + DRIVE],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driven.returncode == 0, driven.stderr
    assert (
        driven.stdout.splitlines()
        == textwrap.dedent(
            """\
        dry: would post notice on checkout: 'Investigating' {}
        executed: notice posted on checkout {'checkout': 'Investigating'}
        again changed: False
        rolled back: previous notice of checkout put back {}
        """
        ).splitlines()
    )
