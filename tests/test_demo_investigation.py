"""`remedium demo --scenario unknown-crashloop`: the LLM investigator, its breaker and its proposal.

The real CLI in a subprocess, as a newcomer runs it: the alert matches no runbook, the
sandbox model (`sandbox-crashloop`) investigates through the read-only tools, the breaker
counts every call, and the proposal becomes an approval request that the demo's operator
approves (the restart then resolves the incident) or, in variant `unapproved`, rejects
(nothing is written to the cluster).
"""

from __future__ import annotations

import re

import pytest

from remedium.demo.sandbox.llm import CRASHLOOP, usage
from remedium.demo.sandboxes import DEMO_LLM_PRICES
from tests.test_demo import _run


def _total_cost() -> float:
    prompt = sum(usage(CRASHLOOP, step)[0] for step in range(3))
    completion = sum(usage(CRASHLOOP, step)[1] for step in range(3))
    return (prompt * DEMO_LLM_PRICES[0] + completion * DEMO_LLM_PRICES[1]) / 1_000_000


@pytest.mark.timeout(400)
@pytest.mark.parametrize(("variant", "outcome"), [("approved", "resolved")])  # rejecting: tests/llm_cases
def test_unknown_crashloop_shows_investigation_breaker_and_proposal(variant: str, outcome: str) -> None:
    done = _run("demo", "--scenario", "unknown-crashloop", "--variant", variant)
    out = done.stdout
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr[-3000:]}"
    assert "0 candidate runbook(s): none" in out, "no runbook matches the alert"
    assert "no runbook matches: investigating with sandbox-crashloop" in out
    calls = re.findall(r"llm_call +LLM call (\d): (\d+) prompt \+ (\d+) completion tokens, \$([0-9.]+)", out)
    assert [(int(n), int(p), int(c)) for n, p, c, _ in calls] == [
        (step + 1, *usage(CRASHLOOP, step)) for step in range(3)
    ]
    assert "tool call call_crashloop_0: kubernetes ok" in out
    assert "tool call call_crashloop_1: logs ok" in out
    assert "finding (untrusted model output, confidence 0.85)" in out
    assert "proposal crashloop-restart becomes an approval request" in out
    tokens = "3836 prompt + 235 completion tokens"
    assert f"breaker ARMED: 3 LLM call(s), 2 tool call(s), {tokens}, ${_total_cost():.6f}" in out
    assert "step restart waits for approval" in out
    assert f"{outcome} (expected {outcome})" in out
    writes = next(line for line in out.splitlines() if line.startswith("Kubernetes writes (not dry runs):"))
    if variant == "approved":
        assert "approved by demo-operator via update, self-declared" in out
        assert writes.endswith("PATCH /apis/apps/v1/namespaces/web/deployments/checkout"), writes
    else:
        assert writes.endswith(": none"), "a rejected proposal changes nothing"
    assert "httpx2" not in done.stderr + out, "no line per LLM request in the timeline"
