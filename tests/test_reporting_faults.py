"""Slack, Jira and PagerDuty misbehaving mid-incident must cost neither incidents nor reports.

bench/faults.py --integrations in small: a real dev server and two `remedium worker`
processes; incidents from PagerDuty report through the product's reporters to the Slack,
Jira and PagerDuty sandboxes, each of which, during the run, answers 5xx (once after the
write took effect), 429 with Retry-After, holds a request past the client timeout and
refuses connections (stopped and started again on its port). Every incident must end
resolved with its restart applied once, and every reporter must have the incident's
outcome, with no event posted twice. Only outcomes are asserted, no timings. (The dead
reporter case, whose audit trail carries the failure, holds an incident for minutes: it is
in the bench's 3-seed campaign, not here.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _faults() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "faults.py"
    spec = importlib.util.spec_from_file_location("bench_faults_reporting", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_reporting_sandboxes_failing_mid_incident_lose_nothing_and_post_nothing_twice(
    tmp_path: Path,
) -> None:
    faults = _faults()
    campaign = faults.Campaign(
        seed=5,
        incidents=4,
        worker_kills=0,
        server_kills=0,
        workers=2,
        integrations=True,
        outages=0,
        sandbox_faults=1,
        dead_pagerduty=0,
        spread_s=0.3,
        deadline_s=180.0,
        workdir=tmp_path,
    )
    record = await faults.run(campaign)
    summary = faults.summary_line(record)
    assert record["lost"] == 0, summary
    assert record["acted_twice"] == 0, summary
    assert record["resolved"] == campaign.incidents, summary
    kinds = {(f["sandbox"], f["kind"]) for f in record["sandbox_faults"]}
    for channel in ("slack", "jira", "pagerduty"):
        assert {k for c, k in kinds if c == channel} == {"5xx", "5xx-after-write", "429", "timeout", "refuse"}
        tally = record["reporters"][channel]
        assert tally["outcome_delivered"] == campaign.incidents, (channel, tally)
        assert tally["silently_missing"] == 0, (channel, tally)
        assert tally["delivered_twice"] == 0, (channel, tally)
        assert tally["error_replies_by_status"], (channel, "no injected error reached the reporter")
