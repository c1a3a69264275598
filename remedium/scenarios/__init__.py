"""Replayable incident scenarios: the world each one needs, seeded into the sandboxes.

`remedium demo` and the end-to-end tests share them, so the demo shows exactly what the
tests prove. A scenario module exposes `NAME`, `RUNBOOK` (its runbook's name),
`EXPECTED_OUTCOME`, `alert(incident_id) -> Alert` and `seed(world, variant)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remedium.sandbox.kubernetes import KubernetesSandbox


@dataclass
class ScenarioWorld:
    """Where a scenario puts its state: the sandbox cluster, Loki's push API, a metric setter."""

    kube: KubernetesSandbox
    loki_url: str
    set_metric: Callable[[str, dict[str, str], float], None]


SCENARIOS = {
    "etl-source-timeout": "remedium.scenarios.etl_source_timeout",
    "crashloop-restart": "remedium.scenarios.crashloop_restart",
}


def load_scenario(name: str) -> ModuleType:
    """The scenario module by its name; ValueError naming the known ones otherwise."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    return importlib.import_module(SCENARIOS[name])
