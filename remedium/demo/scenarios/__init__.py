"""Replayable incident scenarios: the world each one needs, seeded into the sandboxes.

`remedium demo` and the end-to-end tests share them, so the demo shows exactly what the
tests prove. A scenario module exposes `NAME`, `RUNBOOK` (its runbook's name),
`EXPECTED_OUTCOME`, `alert(incident_id) -> Alert` and `seed(world, variant)`.

Adding a scenario is adding such a module here: every module of this package that defines
`NAME` is found by `scenarios()`; there is no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remedium.demo.sandbox.kubernetes import KubernetesSandbox


@dataclass
class ScenarioWorld:
    """Where a scenario puts its state: the sandbox cluster, Loki's push API, a metric setter."""

    kube: KubernetesSandbox
    loki_url: str
    set_metric: Callable[[str, dict[str, str], float], None]


def scenarios() -> dict[str, ModuleType]:
    """Every scenario module of this package by its `NAME`, sorted by name."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__, f"{__name__}."):
        module = importlib.import_module(info.name)
        name = getattr(module, "NAME", None)
        if not isinstance(name, str):
            continue
        if name in found:
            raise RuntimeError(f"scenario {name!r} defined by {found[name].__name__} and {module.__name__}")
        found[name] = module
    return dict(sorted(found.items()))


def load_scenario(name: str) -> ModuleType:
    """The scenario module by its name; ValueError naming the known ones otherwise."""
    known = scenarios()
    if name not in known:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(known)}")
    return known[name]
