"""Worker crashes mid-diagnostic and mid-action must cost nothing: the fast fault campaign.

bench/faults.py in small (the full campaign and the integration one are benches): a real
dev server, two `remedium worker` processes that are SIGKILLed while one of their attempts
is in flight (a diagnostic's GET, a 0.5-2 s restart) and started again, and a target that
applies each Idempotency-Key once. Every incident must end resolved, each restart applied
exactly once, whatever died when. No timings are asserted: only outcomes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _faults() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "faults.py"
    spec = importlib.util.spec_from_file_location("bench_faults", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_worker_sigkills_during_diagnosis_and_action_cost_nothing(tmp_path: Path) -> None:
    faults = _faults()
    campaign = faults.Campaign(
        seed=12,
        incidents=10,
        worker_kills=6,
        server_kills=0,
        workers=2,
        spread_s=0.3,
        deadline_s=150.0,  # generous: CI is 2 loaded cores; the campaign ends when all have
        kill_probability=0.8,
        workdir=tmp_path,
    )
    record = await faults.run(campaign)
    summary = faults.summary_line(record)
    kills = record["worker_kills_by_stage"]
    assert record["worker_kills"] >= 5, (kills, summary)
    assert kills.get("diagnosis", 0) >= 2 and kills.get("action", 0) >= 2, (kills, summary)
    assert record["lost"] == 0, summary
    assert record["acted_twice"] == 0, summary
    assert record["resolved"] == campaign.incidents, summary
    for incident in record["per_incident"]:
        assert incident["restarts_applied"] == 1, incident
