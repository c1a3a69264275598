"""Evaluations of the LLM investigator: recorded investigations replayed through the real one.

Each case in `tests/llm_cases/*.json` fixes an alert no runbook matches, the world the
model's tools read (a Deployment in the Kubernetes sandbox, streams in the Loki sandbox,
gauges in the Prometheus sandbox) and the model's replies (served by the LLM sandbox as a
scripted model, with their `usage`). The case runs as an incident on a real Temporal server
and worker, with the shipped runbook library: every tool call is the real diagnostic
activity against the sandboxes, every reply goes through the official `openai` client. Then
it checks what a user would see: the outcome and its reason, the finding, the pending
approval a proposal became, the breaker's accounting to the token and the cent (the
`status` query's `breaker` and each `llm_call` audit entry), its transitions, what the model
was shown (tool results wrapped as untrusted, no secret), and that the Kubernetes API
received no write but dry runs.

    .venv/bin/python bench/llm_eval.py [CASE_NAME...]   # last line: "pass ratio: N/M (x.xx)"

It writes `bench/results/llm_eval.json`. `tests/test_llm_eval.py` runs the same cases.

Case file fields (all checked, `extra="forbid"`):
  name, description, alert {source, id, title, service, severity, labels, annotations}
  world: deployments [{namespace, name, replicas, image, behaviour, pod_logs}],
         logs [{labels, lines}], metrics [{name, labels, value}]
  model: {replies: [...]}         # as `LlmSandbox.script` takes them
  prices: {input_per_mtok, output_per_mtok}, policy: {...}  # merged over the base policy
  expect: outcome, reason_contains, finding, approval, breaker, transitions, shown
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client, WorkflowHandle

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the product is importable from the checkout
    sys.path.insert(0, str(REPO))

from remedium.demo.sandbox.kubernetes import KubernetesSandbox, deployment  # noqa: E402
from remedium.demo.sandbox.llm import LlmSandbox  # noqa: E402
from remedium.demo.sandbox.loki import LokiSandbox  # noqa: E402
from remedium.demo.sandbox.prometheus import PrometheusSandbox  # noqa: E402
from remedium.models import Alert, AuditEntry, DecideRequest, IncidentResult, IncidentStatus  # noqa: E402
from remedium.names import AUDIT_QUERY, STATUS_QUERY  # noqa: E402
from remedium.settings import Settings  # noqa: E402

CASES_DIR = REPO / "tests" / "llm_cases"
RESULTS = REPO / "bench" / "results" / "llm_eval.json"
RUNBOOKS_DIR = REPO / "runbooks"
EVAL_APPROVER = "eval-operator"
CASE_TIMEOUT_S = 120.0
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
BASE_POLICY: dict[str, Any] = {
    "apiVersion": "remedium/v1",
    "kind": "Policy",
    "approval": {"approvers": [EVAL_APPROVER], "required_for": ["high"], "timeout": "30m"},
    "autonomy": "auto",
    "blast_radius": {"namespaces": ["web", "payments", "default"], "max_replicas_delta": 3},
    "http": {"allow": []},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseDeployment(_Strict):
    namespace: str
    name: str
    replicas: int = 2
    image: str = "registry.local/app:1.0"
    behaviour: str = "crashloop"  # the Kubernetes sandbox's pod behaviour for every revision
    pod_logs: list[str] = Field(default_factory=list)


class CaseLogs(_Strict):
    labels: dict[str, str]
    lines: list[str]


class CaseMetric(_Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class CaseWorld(_Strict):
    deployments: list[CaseDeployment] = Field(default_factory=list)
    logs: list[CaseLogs] = Field(default_factory=list)
    metrics: list[CaseMetric] = Field(default_factory=list)


class CaseModel(_Strict):
    replies: list[dict[str, Any]] = Field(min_length=1)


class CasePrices(_Strict):
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


class ExpectBreaker(_Strict):
    state: str
    llm_calls: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class ExpectApproval(_Strict):
    step: str
    action: str


class Expect(_Strict):
    outcome: str
    reason_contains: list[str] = Field(default_factory=list)
    finding: dict[str, Any] | None = Field(default=None, description="fields the finding must have")
    approval: ExpectApproval | None = None
    breaker: ExpectBreaker
    transitions: list[list[str]] = Field(default_factory=list, description="[from, to] of each breaker entry")
    shown: list[list[str]] = Field(
        default_factory=list,
        description='[source, text]: the model saw `text` inside <untrusted source="source">',
    )


class Case(_Strict):
    name: str
    description: str
    alert: dict[str, Any]
    world: CaseWorld
    model: CaseModel
    prices: CasePrices = Field(default_factory=CasePrices)
    policy: dict[str, Any] = Field(default_factory=dict)
    expect: Expect

    @property
    def model_name(self) -> str:
        return f"eval-{self.name}"


def load_cases(names: list[str] | None = None) -> list[Case]:
    cases = [Case.model_validate_json(p.read_text()) for p in sorted(CASES_DIR.glob("*.json"))]
    if names:
        unknown = set(names) - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.name in names]
    return cases


@dataclass
class CaseRun:
    """What the case's incident did, as its user (and the sandboxes) saw it."""

    case: Case
    result: IncidentResult
    status: IncidentStatus  # at the decisive moment: the approval pending, or the end
    audit: list[AuditEntry]
    pending: dict[str, Any] | None
    shown: list[str]  # the tool messages the model received
    everything_shown: str  # every request the model got, as text
    secrets: list[str]
    writes: list[str]
    seconds: float
    problems: list[str] = field(default_factory=list)


@dataclass
class _Sandboxes:
    kube: KubernetesSandbox
    loki: LokiSandbox
    prometheus: PrometheusSandbox
    llm: LlmSandbox


def _start_sandboxes(stack: ExitStack) -> _Sandboxes:
    kube = KubernetesSandbox(tick=0.05).start()
    stack.callback(kube.stop)
    loki = LokiSandbox().start()
    stack.callback(loki.stop)
    prometheus = PrometheusSandbox().start()
    stack.callback(prometheus.stop)
    llm = LlmSandbox().start()
    stack.callback(llm.stop)
    return _Sandboxes(kube, loki, prometheus, llm)


def _seed(case: Case, boxes: _Sandboxes) -> None:
    now = time.time_ns()
    for d in case.world.deployments:
        boxes.kube.set_pod_behaviour(d.namespace, d.name, d.behaviour)
        if d.pod_logs:
            boxes.kube.set_pod_logs(d.namespace, d.name, d.pod_logs)
        boxes.kube.apply(
            deployment(d.namespace, d.name, replicas=d.replicas, image=d.image, labels={"app": d.name})
        )
    for stream in case.world.logs:
        lines = stream.lines
        boxes.loki.push(
            stream.labels, [(now - (len(lines) - i) * 10**10, line) for i, line in enumerate(lines)]
        )
    for metric in case.world.metrics:
        boxes.prometheus.set(metric.name, metric.labels, metric.value)
    boxes.llm.script(case.model_name, case.model.replies)
    for d in case.world.deployments:
        boxes.kube.wait_until(lambda d=d: _pods_started(boxes.kube, d), timeout=30)  # type: ignore[misc]


def _pods_started(kube: KubernetesSandbox, d: CaseDeployment) -> bool:
    """Pods exist and, for a crash loop, are in CrashLoopBackOff already (what the alert saw)."""
    pods = kube.list_objects("v1", "Pod", d.namespace)
    statuses = [s for p in pods for s in (p.get("status") or {}).get("containerStatuses") or []]
    if d.behaviour != "crashloop":
        return bool(statuses)
    return any(
        ((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff" for s in statuses
    )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _settings(case: Case, boxes: _Sandboxes, workdir: Path) -> Settings:
    policy = workdir / "policy.yaml"
    policy.write_text(yaml.safe_dump(_merge(BASE_POLICY, case.policy)))
    return Settings(
        runbooks_dir=RUNBOOKS_DIR,
        policy_file=policy,
        task_queue=f"llm-eval-{uuid.uuid4().hex[:8]}",
        kubeconfig=boxes.kube.write_kubeconfig(workdir / "kubeconfig"),
        loki_url=boxes.loki.url,
        prometheus_url=boxes.prometheus.url,
        llm_base_url=boxes.llm.base_url,
        llm_api_key=boxes.llm.api_key,
        llm_model=case.model_name,
        llm_price_input_per_mtok=case.prices.input_per_mtok,
        llm_price_output_per_mtok=case.prices.output_per_mtok,
        llm_timeout=20.0,
    )


async def _decisive_status(handle: WorkflowHandle[Any, IncidentResult]) -> tuple[IncidentStatus | None, bool]:
    """Poll until the incident ends or waits for a human; (the last status, whether it ended)."""
    deadline = time.monotonic() + CASE_TIMEOUT_S
    last: IncidentStatus | None = None
    while time.monotonic() < deadline:
        description = await handle.describe()
        try:
            last = await handle.query(STATUS_QUERY, result_type=IncidentStatus)
        except Exception:  # not started yet, or racing the first task
            pass
        if description.status is not None and description.status.name != "RUNNING":
            return last, True
        if last is not None and last.pending_approval is not None:
            return last, False
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the incident neither ended nor asked for approval within {CASE_TIMEOUT_S:g}s")


async def run_case(client: Client, case: Case) -> CaseRun:
    """The case as an incident on `client`'s server, with a worker and sandboxes of its own."""
    from remedium.demo.recording import start, worker_for
    from remedium.incidents import decide

    started = time.monotonic()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="llm-eval-") as tmp:
        boxes = _start_sandboxes(stack)
        _seed(case, boxes)
        settings = _settings(case, boxes, Path(tmp))
        alert = Alert.model_validate(
            {**case.alert, "id": f"{case.alert['id']}{uuid.uuid4().hex[:8].upper()}"}
        )
        async with AsyncExitStack() as running:
            await running.enter_async_context(worker_for(client, settings))
            handle = await start(client, settings, alert)
            status, ended = await _decisive_status(handle)
            pending = None
            if not ended and status is not None and status.pending_approval is not None:
                pending = status.pending_approval.model_dump(mode="json")
                await decide(
                    client,
                    handle.id,
                    DecideRequest(
                        decision="reject",
                        by=EVAL_APPROVER,
                        step=status.pending_approval.step,
                        request=status.pending_approval.request,
                        reason="evaluation: the proposal is checked, never run",
                    ),
                )
            result = await asyncio.wait_for(handle.result(), CASE_TIMEOUT_S)
            audit = await handle.query(AUDIT_QUERY, result_type=list[AuditEntry])
            final = await handle.query(STATUS_QUERY, result_type=IncidentStatus)
        completions = boxes.llm.completions_for(case.model_name)
        shown = [
            str(m.get("content") or "")
            for m in (completions[-1].messages if completions else [])
            if m.get("role") == "tool"
        ]
        writes = [
            f"{r.method} {r.path}"
            for r in boxes.kube.requests
            if r.access is not None and r.access.verb in WRITE_VERBS and "dryRun" not in r.query
        ]
        return CaseRun(
            case=case,
            result=result,
            status=final if pending is None else (status or final),
            audit=audit,
            pending=pending,
            shown=shown,
            everything_shown="\n".join(c.text() for c in completions),
            secrets=[boxes.llm.api_key, boxes.kube.token],
            writes=writes,
            seconds=time.monotonic() - started,
        )


def _cost(prompt: int, completion: int, prices: CasePrices) -> float:
    return (prompt * prices.input_per_mtok + completion * prices.output_per_mtok) / 1_000_000


def _subset(want: Any, got: Any, where: str, problems: list[str]) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key, value in want.items():
            if key not in got:
                problems.append(f"{where}.{key}: missing (got keys {sorted(got)})")
            else:
                _subset(value, got[key], f"{where}.{key}", problems)
    elif isinstance(want, float) or isinstance(got, float):
        if not isinstance(got, int | float) or not math.isclose(float(want), float(got), abs_tol=1e-9):
            problems.append(f"{where}: expected {want!r}, got {got!r}")
    elif want != got:
        problems.append(f"{where}: expected {want!r}, got {got!r}")


def verdict(run: CaseRun) -> list[str]:
    """Every way the run differs from the case's expectations (empty: the case passes)."""
    case, expect, problems = run.case, run.case.expect, list[str]()
    if run.result.outcome != expect.outcome:
        problems.append(f"outcome: expected {expect.outcome}, got {run.result.outcome} ({run.result.reason})")
    for text in expect.reason_contains:
        if text not in run.result.reason:
            problems.append(f"reason: {text!r} not in {run.result.reason!r}")
    finding = run.status.finding
    if expect.finding is None and finding is not None:
        problems.append(f"finding: expected none, got {finding.model_dump(mode='json')}")
    elif expect.finding is not None:
        if finding is None:
            problems.append("finding: expected one, got none")
        else:
            _subset(expect.finding, finding.model_dump(mode="json"), "finding", problems)
    if expect.approval is None and run.pending is not None:
        problems.append(f"approval: expected none, got step {run.pending.get('step')!r}")
    elif expect.approval is not None:
        if run.pending is None:
            problems.append("approval: expected the proposal to wait for a human; nothing was pending")
        else:
            _subset(expect.approval.model_dump(), run.pending, "approval", problems)
    breaker = run.status.breaker
    if breaker is None:
        problems.append("breaker: none in the status query")
    else:
        _subset(expect.breaker.model_dump(), breaker.model_dump(mode="json"), "breaker", problems)
        want_cost = _cost(expect.breaker.prompt_tokens, expect.breaker.completion_tokens, case.prices)
        if not math.isclose(expect.breaker.cost_usd, want_cost, abs_tol=1e-9):
            problems.append(
                f"case: breaker.cost_usd {expect.breaker.cost_usd} is not its tokens' price {want_cost}"
            )
    calls = [e for e in run.audit if e.kind == "llm_call"]
    replies = case.model.replies
    if len(calls) != expect.breaker.llm_calls:
        problems.append(f"audit: {len(calls)} llm_call entries, expected {expect.breaker.llm_calls}")
    for n, entry in enumerate(calls):
        used = replies[min(n, len(replies) - 1)].get("usage") or {}
        prompt, completion = int(used.get("prompt_tokens", 0)), int(used.get("completion_tokens", 0))
        data = entry.data or {}
        if (data.get("prompt_tokens"), data.get("completion_tokens")) != (prompt, completion):
            problems.append(
                f"audit: llm_call {n + 1} has {data.get('prompt_tokens')}+{data.get('completion_tokens')} "
                f"tokens, the reply {prompt}+{completion}"
            )
        if not math.isclose(
            float(data.get("cost_usd", -1)), _cost(prompt, completion, case.prices), abs_tol=1e-12
        ):
            problems.append(
                f"audit: llm_call {n + 1} costs {data.get('cost_usd')}, "
                f"expected {_cost(prompt, completion, case.prices)}"
            )
    transitions = [
        [str((e.data or {}).get("from")), str((e.data or {}).get("to"))]
        for e in run.audit
        if e.kind == "breaker"
    ]
    if transitions != expect.transitions:
        problems.append(f"breaker transitions: expected {expect.transitions}, got {transitions}")
    for source, text in expect.shown:
        opened = f'<untrusted source="{source}">'
        if not any(m.startswith(opened) and m.endswith("</untrusted>") and text in m for m in run.shown):
            problems.append(f"shown: no {source} result wrapped as untrusted containing {text!r}")
    for secret in run.secrets:
        if secret and secret in run.everything_shown:
            problems.append("shown: a credential reached the model")
    if run.writes:
        problems.append(f"state changed: Kubernetes writes {run.writes}")
    return problems


async def _main(names: list[str]) -> int:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from remedium.devserver import temporal_binary
    from remedium.names import SEARCH_ATTRIBUTES

    cases = load_cases(names or None)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        dev_server_extra_args=["--ui-disable-news-fetch"],
    )
    rows: list[dict[str, Any]] = []
    try:
        for case in cases:
            try:
                run = await run_case(env.client, case)
                problems = verdict(run)
                seconds = run.seconds
                breaker = run.status.breaker.model_dump(mode="json") if run.status.breaker else None
                outcome: str = run.result.outcome
            except Exception as exc:  # a case that cannot run fails; the others still run
                problems, seconds, breaker, outcome = [f"did not run: {exc!r}"], 0.0, None, "error"
            rows.append(
                {
                    "case": case.name,
                    "passed": not problems,
                    "problems": problems,
                    "outcome": outcome,
                    "breaker": breaker,
                    "seconds": round(seconds, 2),
                }
            )
            mark = "PASS" if not problems else "FAIL"
            print(f"{mark} {case.name}: {outcome} in {seconds:.1f}s", flush=True)
            for problem in problems:
                print(f"     {problem}", flush=True)
    finally:
        await env.shutdown()
    passed = sum(1 for r in rows if r["passed"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "llm_eval",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "passed": passed,
                "total": len(rows),
                "cases": rows,
            },
            indent=2,
        )
        + "\n"
    )
    ratio = passed / len(rows) if rows else 0.0
    print(f"pass ratio: {passed}/{len(rows)} ({ratio:.2f})")
    return 0 if rows and passed == len(rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("cases", nargs="*", help="case names (default: every case in tests/llm_cases)")
    args = parser.parse_args()
    return asyncio.run(_main(list(args.cases)))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CASES_DIR", "Case", "CaseRun", "load_cases", "run_case", "verdict"]
