"""Evaluations: each recorded investigation in tests/llm_cases replayed through the real investigator.

The case fixes the alert, what the tools read (seeded into the Kubernetes, Loki and
Prometheus sandboxes) and the model's replies (the LLM sandbox serves them through the
official `openai` client); the incident runs on the session's dev server with a real worker
and the shipped runbook library. `bench/llm_eval.py` runs the same cases and prints the
pass ratio; the checks themselves are `bench.llm_eval.verdict`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # as the benches import each other

from llm_eval import CASES_DIR, Case, CaseRun, load_cases, run_case, verdict

CASES = load_cases()


def test_every_case_file_is_a_valid_case() -> None:
    files = sorted(CASES_DIR.glob("*.json"))
    assert len(files) >= 5
    assert [c.name for c in CASES] == [f.stem for f in files]  # named as its file
    for case in CASES:
        reply_ids = [c.get("id") for r in case.model.replies for c in r.get("tool_calls") or []]
        evidence = (case.expect.finding or {}).get("evidence") or []
        assert set(evidence) <= set(reply_ids), f"{case.name}: evidence names no recorded tool call"


@pytest.mark.timeout(200)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_recorded_investigation(dev_env: WorkflowEnvironment, case: Case) -> None:
    run = await run_case(dev_env.client, case)
    problems = verdict(run)
    assert problems == [], "\n".join(problems)
    assert run.writes == []  # no state-changing Kubernetes request, whatever the model proposed


@pytest.mark.timeout(200)
async def test_the_verdict_fails_a_run_that_differs_from_its_case(dev_env: WorkflowEnvironment) -> None:
    """The checks can fail: one token more, another outcome or a write is each reported."""
    case = next(c for c in CASES if c.name == "plain-answer")
    run = await run_case(dev_env.client, case)
    assert verdict(run) == []
    breaker = case.expect.breaker.model_copy(update={"prompt_tokens": case.expect.breaker.prompt_tokens + 1})
    wrong = case.model_copy(update={"expect": case.expect.model_copy(update={"breaker": breaker})})
    assert any(
        p.startswith("breaker.prompt_tokens") for p in verdict(CaseRun(**{**vars(run), "case": wrong}))
    )
    other = case.model_copy(update={"expect": case.expect.model_copy(update={"outcome": "resolved"})})
    assert any(p.startswith("outcome:") for p in verdict(CaseRun(**{**vars(run), "case": other})))
    wrote = CaseRun(**{**vars(run), "writes": ["PATCH /apis/apps/v1/namespaces/web/deployments/checkout"]})
    assert any(p.startswith("state changed") for p in verdict(wrote))
