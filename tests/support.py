"""Test helpers: a real HTTP service to remediate, runbook files, a worker bound to a server.

The helpers `scripts/record_histories.py` also needs live in `remedium/demo/recording.py`
(scripts import nothing from `tests/`); they are re-exported here for the tests.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from typing import Any

from remedium.demo.recording import (
    Delivery,
    TargetService,
    alert_for,
    http_allow,
    restart_runbook,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
    write_config,
)

__all__ = [
    "CLI",
    "ONLY_THE_COPY",
    "SESSION_STARTUPS",
    "VECTORS_DIR",
    "Delivery",
    "TargetService",
    "alert_for",
    "api_runbook",
    "copy_product",
    "http_allow",
    "restart_runbook",
    "settings_for",
    "start",
    "wait_for_stage",
    "worker_for",
    "write_config",
]

# Start-up time of each real service the session shares, printed at the end of the run.
SESSION_STARTUPS: dict[str, float] = {}

# Captured from the real services and clients; `../shared/` sits beside the checkout.
VECTORS_DIR = Path(__file__).resolve().parents[2] / "shared" / "vectors"


REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("remedium", "workflows", "activities", "runbooks", "worker.py", "pyproject.toml", "README.md")


# Run first in a subprocess working in such a copy: the editable install's finder would
# otherwise resolve modules the copy lacks from this checkout.
ONLY_THE_COPY = (
    "import sys; sys.meta_path[:] = "
    "[f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
)
CLI = ONLY_THE_COPY + "from remedium.cli.main import entry; entry()"


def copy_product(dest: Path, exclude: tuple[str, ...] = ()) -> Path:
    """The product's files alone, as a fresh checkout (or, with exclusions, an image) holds them."""
    dest.mkdir(parents=True, exist_ok=True)

    def ignored(folder: str, entries: list[str]) -> set[str]:
        relative = Path(folder).relative_to(REPO)
        paths = {entry: (relative / entry).as_posix() for entry in entries}
        return {
            entry
            for entry, path in paths.items()
            if entry == "__pycache__" or any(fnmatch.fnmatch(path, pattern) for pattern in exclude)
        }

    for name in PRODUCT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignored)
        else:
            shutil.copy2(source, dest / name)
    return dest


def api_runbook(target: TargetService) -> dict[str, Any]:
    """A PagerDuty-matched runbook for the vector's "API Service": one high-risk call, then a health check."""
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": "api-bump"},
        "match": {"source": ["pagerduty"], "service": ["API Service"]},
        "plan": [
            {
                "id": "flush-cache",
                "action": "http.request",
                "risk": "high",
                "with": {"url": f"{target.url}/admin/restart", "json": {"cache": "api"}},
            }
        ],
        "verify": {
            "checks": [{"id": "health", "kind": "http", "with": {"url": f"{target.url}/health"}}],
            "success": ["facts.health.value.status == 200"],
            "every": "1s",
            "within": "20s",
        },
    }
