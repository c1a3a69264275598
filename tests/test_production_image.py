"""The production image holds the product without the demo, and the product needs nothing from it.

The image is built from the files `.dockerignore` lets through; that same selection is copied
here, so this is the tree the Dockerfile installs. In it the worker's catalog loads every
integration, runbooks validate, and `remedium demo` says in one sentence why it cannot run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import CLI, ONLY_THE_COPY, REPO, copy_product

LOAD = """\
import asyncio
from remedium.catalog import action_catalog, diagnostic_catalog, integration_catalog, reporter_catalog
from remedium.models import Policy
from remedium.runbook.loader import load_runbooks
from remedium.settings import Settings
from remedium.worker import build_activities, open_clients

async def main():
    async with open_clients(Settings()) as clients:
        built = build_activities(load_runbooks(["runbooks"]), Policy(), clients)
    print(len(built), sorted(integration_catalog()), len(action_catalog()), len(diagnostic_catalog()),
          sorted(reporter_catalog()))

asyncio.run(main())
"""


def _ignored_by_docker() -> tuple[str, ...]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return tuple(line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#"))


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_image_leaves_the_demo_out() -> None:
    assert "remedium/demo" in _ignored_by_docker()
    assert "test ! -e remedium/demo" in (REPO / "Dockerfile").read_text()


def test_the_product_runs_without_the_demo(tmp_path: Path) -> None:
    image = copy_product(tmp_path / "app", exclude=_ignored_by_docker())
    assert not (image / "remedium" / "demo").exists()
    assert (image / "activities" / "kubernetes").is_dir()

    loaded = _run(image, "-c", ONLY_THE_COPY + LOAD)
    assert loaded.returncode == 0, loaded.stderr
    count, *rest = loaded.stdout.split(" ", 1)
    assert int(count) > 30
    assert "'kubernetes'" in rest[0] and "'slack'" in rest[0] and "['jira', 'pagerduty', 'slack']" in rest[0]

    validated = _run(image, "-c", CLI, "runbook", "validate", "runbooks")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    demo = _run(image, "-c", CLI, "demo")
    assert demo.returncode == 1
    assert demo.stdout == ""
    assert demo.stderr.strip().splitlines() == [
        "remedium: the demo is not installed here (production images leave out remedium/demo); "
        "run it from a source checkout"
    ]
