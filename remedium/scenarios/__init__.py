"""Replayable incident scenarios: the world each one needs, seeded into the sandboxes.

`remedium demo` and the end-to-end tests share them, so the demo shows exactly what the
tests prove. A scenario module exposes `NAME`, `RUNBOOK` (its runbook's name),
`EXPECTED_OUTCOME`, `alert(incident_id) -> Alert` and `seed(world, variant)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remedium.sandbox.kubernetes import KubernetesSandbox


@dataclass
class ScenarioWorld:
    """Where a scenario puts its state: the sandbox cluster, Loki's push API, a metric setter."""

    kube: KubernetesSandbox
    loki_url: str
    set_metric: Callable[[str, dict[str, str], float], None]
