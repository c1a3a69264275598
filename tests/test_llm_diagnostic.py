"""A runbook's `diagnose` entry of kind `llm`: the investigator answers as one of its facts.

Real Temporal, the real worker and `openai` client against the LLM sandbox (scripted by model
name), the tools against the Kubernetes and Loki sandboxes. What is asserted is what an
operator sees: the fact the runbook's `decide` used, the pending approval it led to, the
breaker and audit trail, and that nothing was changed by the model.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.demo.sandbox import llm as sandbox_llm
from remedium.demo.sandbox.kubernetes import KubernetesSandbox
from remedium.demo.sandbox.llm import LlmSandbox
from remedium.demo.sandbox.loki import LokiSandbox
from remedium.demo.scenarios import ScenarioWorld
from remedium.demo.scenarios import crashloop_restart as crashloop
from remedium.models import Alert, AuditEntry, DecideRequest, IncidentResult, IncidentStatus
from remedium.replay import replay_paths
from remedium.runbook.loader import validate_runbook_file
from remedium.settings import Settings
from tests.support import start, wait_for_stage, worker_for

REPO = Path(__file__).resolve().parent.parent
CRASH_LINE = "FATAL: connection pool exhausted after failover to db-2; exiting"
QUESTION = "Is a crashing container behind the error rate?"


def _runbook(when: list[str]) -> dict[str, Any]:
    """Matches the alert itself; asks the investigator, then restarts what its finding names."""
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": "ask-llm", "description": "ask the investigator first", "owner": "sre"},
        "match": {"title": "(?i)error rate"},
        "vars": {
            "namespace": "{{ facts.ask.value.proposal.params.namespace }}",
            "deployment": "{{ facts.ask.value.proposal.params.deployment }}",
        },
        "diagnose": [{"id": "ask", "kind": "llm", "with": {"question": QUESTION}}],
        "decide": {"when": when},
        "plan": [
            {
                "id": "restart",
                "action": "kubernetes.rollout_restart",
                "risk": "medium",
                "approval": {"required": True},
                "with": {"namespace": "{{ vars.namespace }}", "name": "{{ vars.deployment }}"},
            }
        ],
        "verify": {
            "checks": [
                {
                    "id": "rollout",
                    "kind": "kubernetes",
                    "with": {
                        "resource": "deployment",
                        "namespace": "{{ vars.namespace }}",
                        "name": "{{ vars.deployment }}",
                    },
                }
            ],
            "success": ["facts.rollout.ok and facts.rollout.value.rollout == 'complete'"],
        },
    }


CONFIDENT = [
    "facts.ask.ok",
    "facts.ask.value.confidence >= 0.8",
    "facts.ask.value.proposal is not none and facts.ask.value.proposal.runbook == 'crashloop-restart'",
    "'fatal' in facts.ask.value.root_cause | lower",
]


def _settings(
    tmp: Path,
    when: list[str],
    *,
    llm: LlmSandbox | None = None,
    model: str = "",
    kube: KubernetesSandbox | None = None,
    loki: LokiSandbox | None = None,
    limits: dict[str, Any] | None = None,
) -> Settings:
    rb_dir = tmp / "runbooks"
    rb_dir.mkdir(exist_ok=True)
    shutil.copy(REPO / "runbooks" / "crashloop-restart.yaml", rb_dir)  # the library a proposal names
    (rb_dir / "ask-llm.yaml").write_text(yaml.safe_dump(_runbook(when), sort_keys=False))
    policy = {
        "apiVersion": "remedium/v1",
        "kind": "Policy",
        "approval": {"approvers": ["alice"], "timeout": "30m"},
        "llm": {"max_cost_usd": 1.0, "max_llm_calls": 6, "max_tool_calls": 10, "max_duration": "2m"}
        | (limits or {}),
    }
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    values: dict[str, Any] = {}
    if llm is not None:
        values |= {
            "llm_base_url": llm.base_url,
            "llm_api_key": sandbox_llm.API_KEY,
            "llm_model": model,
            "llm_price_input_per_mtok": 2.5,
            "llm_price_output_per_mtok": 10.0,
        }
    if kube is not None:
        values["kubeconfig"] = kube.write_kubeconfig(tmp / "kubeconfig")
    if loki is not None:
        values["loki_url"] = loki.url
    return Settings(
        runbooks_dir=rb_dir,
        policy_file=tmp / "policy.yaml",
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        **values,
    )


def _alert() -> Alert:
    return Alert(
        source="pagerduty",
        id=f"PASK{uuid.uuid4().hex[:8].upper()}",
        title="Deployment payments/api: error rate above SLO",
        service="payments-api",
        severity="P2",
    )


async def _audit(handle: WorkflowHandle[Any, Any]) -> list[AuditEntry]:
    entries: list[AuditEntry] = await handle.query("audit", result_type=list[AuditEntry])
    return entries


def _fact_entry(audit: list[AuditEntry]) -> AuditEntry:
    return next(e for e in audit if e.kind == "diagnostic" and e.message.startswith("ask (llm)"))


@pytest.fixture(scope="module")
def llm_sandbox() -> Any:
    sandbox = LlmSandbox().start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


# ------------------------------------------------------------------ validation


def test_validate_accepts_the_llm_kind_and_says_where_it_is_misused(tmp_path: Path) -> None:
    good = tmp_path / "ask.yaml"
    good.write_text(yaml.safe_dump(_runbook(CONFIDENT), sort_keys=False))
    runbook, problems = validate_runbook_file(good)
    assert problems == [] and runbook is not None
    assert runbook.diagnose[0].kind == "llm"

    bad_doc = _runbook(CONFIDENT)
    bad_doc["diagnose"].append({"id": "vague", "kind": "llm"})
    bad_doc["diagnose"].append(
        {"id": "templated", "kind": "llm", "with": {"question": "why {{ alert.title }}?"}}
    )
    bad_doc["verify"] = {
        "checks": [{"id": "again", "kind": "llm", "with": {"question": "fixed?"}}],
        "success": ["true"],
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_doc, sort_keys=False))
    _, problems = validate_runbook_file(bad)
    messages = [p.message for p in problems]
    assert any("question" in m and "missing" in m.lower() for m in messages), messages
    assert any("templates are not rendered" in m for m in messages), messages
    assert any("only for diagnose" in m for m in messages), messages
    assert all(p.line > 1 for p in problems)  # each at its own line, not the file's top


# ------------------------------------------------------------------ the finding feeds decide


@pytest.mark.timeout(240)
async def test_finding_is_a_fact_the_runbook_decides_on_and_nothing_acts_unapproved(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    kube_sandbox: KubernetesSandbox,
    loki: LokiSandbox,
    llm_sandbox: LlmSandbox,
) -> None:
    crashloop.seed(
        ScenarioWorld(kube=kube_sandbox, loki_url=loki.url, set_metric=lambda *a: None), "recovering"
    )
    now = time.time_ns()
    loki.push(
        {"namespace": "payments", "app": "api"}, [(now - 2000, "starting api"), (now - 1000, CRASH_LINE)]
    )
    settings = _settings(
        tmp_path, CONFIDENT, llm=llm_sandbox, model=sandbox_llm.CRASHLOOP, kube=kube_sandbox, loki=loki
    )
    writes_before = _writes(kube_sandbox)
    alert = _alert()
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert)
        status: IncidentStatus = await wait_for_stage(handle, "awaiting_approval", timeout=90)
        assert status.runbook == "ask-llm"  # the matched runbook, not the proposal's
        pending = status.pending_approval
        assert pending is not None and pending.step == "restart"
        assert "payments/api" in pending.dry_run.target  # vars from facts.ask.value.proposal.params
        assert _writes(kube_sandbox) == writes_before  # the model's proposal ran nothing
        assert status.breaker is not None and status.breaker.state == "ARMED"
        assert (status.breaker.llm_calls, status.breaker.tool_calls) == (3, 2)
        assert status.finding is not None and status.finding.confidence == 0.85

        audit = await _audit(handle)
        kinds = [e.kind for e in audit]
        assert kinds.count("llm_call") == 3 and kinds.count("llm_tool") == 2 and "finding" in kinds
        fact = _fact_entry(audit)
        assert fact.data["ok"] is True and fact.data["query"] == QUESTION
        assert CRASH_LINE in fact.data["value"]["root_cause"]
        assert fact.data["value"]["proposal"]["runbook"] == "crashloop-restart"
        # No second investigation and no advisory hand-over: the runbook decided.
        assert not any("advisory level" in e.message for e in audit)

        # The runbook's question reached the model, outside the untrusted alert data.
        opening = llm_sandbox.completions_for(sandbox_llm.CRASHLOOP)[-3].messages[1]["content"]
        assert QUESTION in opening.split('<untrusted source="alert">')[0]

        await handle.execute_update(
            "decide", DecideRequest(decision="reject", step="restart", by="alice"), result_type=str
        )
        result: IncidentResult = await asyncio.wait_for(handle.result(), 120)
    assert result.outcome == "rejected", result.reason
    assert _writes(kube_sandbox) == writes_before
    history = tmp_path / "asked.json"
    history.write_text((await handle.fetch_history()).to_json())
    assert sandbox_llm.API_KEY not in history.read_text()
    [(_, failure)] = await replay_paths([history])
    assert failure is None, failure


def _writes(kube: KubernetesSandbox) -> list[Any]:
    return [
        r
        for r in kube.requests
        if r.method in ("POST", "PUT", "PATCH", "DELETE") and "dryRun" not in r.query and r.status < 300
    ]


# ------------------------------------------------------------------ a broken breaker is a failed fact


@pytest.mark.timeout(240)
async def test_runaway_model_breaks_the_breaker_and_the_fact_fails_without_holding_the_incident(
    dev_env: WorkflowEnvironment, tmp_path: Path, llm_sandbox: LlmSandbox
) -> None:
    settings = _settings(
        tmp_path,
        ["facts.ask.ok"],
        llm=llm_sandbox,
        model=sandbox_llm.RUNAWAY,
        limits={"max_llm_calls": 2, "max_tool_calls": 50},
    )
    calls_before = len(llm_sandbox.completions_for(sandbox_llm.RUNAWAY))
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, _alert())
        result: IncidentResult = await asyncio.wait_for(handle.result(), 120)
        status = await handle.query("status", result_type=IncidentStatus)
        audit = await _audit(handle)
    assert result.outcome == "escalated"  # the runbook's decide saw the failed fact
    assert len(llm_sandbox.completions_for(sandbox_llm.RUNAWAY)) - calls_before == 2
    assert status.breaker is not None and status.breaker.state == "CIRCUIT_BROKEN"
    assert "max_llm_calls of 2 reached" in status.breaker.reason
    fact = _fact_entry(audit)
    assert fact.data["ok"] is False and "circuit breaker: max_llm_calls of 2 reached" in fact.data["error"]
    transitions = [(e.data["from"], e.data["to"]) for e in audit if e.kind == "breaker"]
    assert transitions == [("ARMED", "TRIGGERED"), ("TRIGGERED", "CIRCUIT_BROKEN")]


async def test_without_an_llm_the_fact_fails_with_llm_not_configured(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, ["facts.ask.ok"])
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, _alert())
        result: IncidentResult = await asyncio.wait_for(handle.result(), 120)
        status = await handle.query("status", result_type=IncidentStatus)
        audit = await _audit(handle)
    assert result.outcome == "escalated"
    fact = _fact_entry(audit)
    assert fact.data["ok"] is False and "LLM not configured" in fact.data["error"]
    assert status.breaker is None  # no investigation ran
    assert not any(e.kind in ("llm_call", "breaker") for e in audit)
