"""The Grafana dashboard, proven against real Prometheus scraping a real worker and ingress.

One worker (with REMEDIUM_METRICS_ADDRESS) and one ingress run the demo scenarios on the demo
sandboxes, all at once: the ETL job (resolved), the crash loop that gets worse (rolled back,
escalated; its PagerDuty incident does not exist, so that reporter fails), a web service
restart a human approves through the `decide` update (resolved), and a web alert whose
health URL the policy does not allow (a guard trip; escalated without a runbook); and an
alert no runbook matches, investigated by the LLM sandbox's runaway model until the circuit
breaker breaks at the policy's `llm.max_llm_calls` (LLM calls, tokens, cost, transitions;
then terminated, so it ends no incident). The real Prometheus binary scrapes both `/metrics`
endpoints every second; then every panel query of `deploy/grafana/dashboards/remedium.json`
must return data, and every metric family the README documents must carry its labels with
the counts these incidents imply.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from remedium import metrics
from remedium.connection import embedded
from remedium.demo.run import free_port
from remedium.demo.sandbox import llm as sandbox_llm
from remedium.demo.sandboxes import DEMO_LLM_PRICES, DEMO_POLICY, WEBHOOK_SECRET, DemoSandboxes
from remedium.demo.scenarios import load_scenario
from remedium.demo.webhook import post_delivery, triggered_delivery
from remedium.errors import StartupError
from remedium.ingress.serve import connect_client, serve_ingress
from remedium.models import Alert, DecideRequest, IncidentResult, IncidentStatus
from remedium.settings import Settings
from remedium.worker import metrics_runtime_of, running_worker
from tests.conftest import dev_address
from tests.plugins.telemetry import spawn_prometheus
from tests.support import TargetService, alert_for, start, wait_for_stage

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "remedium.json"
# What Grafana substitutes, chosen for a 1 s scrape interval and a run of about a minute.
IDLE_MAY_BE_ZERO = {"Task slots used"}
LLM_MAX_CALLS = 2  # the runaway model is stopped by the breaker after this many answered calls
TEMPLATE = {"$__rate_interval": "1m", "$__range": "15m", "${datasource}": "prometheus"}


@dataclass
class Prometheus:
    url: str

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; async, because the ingress under test serves from this event loop."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{self.url}/api/v1/query", params={"query": expr})
        assert response.status_code == 200, f"{expr}: {response.status_code} {response.text}"
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    async def until(self, expr: str, predicate: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = await self.query(expr)
            if predicate(result):
                return result
            await asyncio.sleep(0.3)
        raise AssertionError(f"Prometheus never answered {expr!r} as expected; last result {result}")


def _value(result: list[dict[str, Any]]) -> float:
    return sum(float(series["value"][1]) for series in result)


@dataclass
class Run:
    prometheus: Prometheus
    outcomes: dict[str, IncidentResult]


def _start_prometheus(targets: list[str], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The Debian binary scraping `targets` every second (skipped with a reason when missing)."""
    return spawn_prometheus(targets, workdir)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _policy(tmp: Path, allowed: str) -> Path:
    """The demo's policy, plus: web restarts always wait for a human, and only `allowed` is reachable."""
    policy = yaml.safe_load(DEMO_POLICY)
    policy["blast_radius"]["always_approve"] = ["http.request"]
    policy["http"] = {"allow": [allowed]}
    policy["llm"] = {"max_llm_calls": LLM_MAX_CALLS}
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


async def _deliver(ingress: str, body: bytes, headers: dict[str, str]) -> str:
    response = await post_delivery(ingress, body, headers)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[DemoSandboxes]:
    started = DemoSandboxes.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
async def run(dev_env: WorkflowEnvironment, sandboxes: DemoSandboxes) -> AsyncIterator[Run]:
    """The four incidents on one worker and one ingress, scraped by a real Prometheus."""
    tmp = Path(tempfile.mkdtemp(prefix="remedium-dashboard-"))
    target = TargetService(health_status=500, health_after_restart=200).start()
    world = sandboxes.world()
    etl, crashloop = load_scenario("etl-source-timeout"), load_scenario("crashloop-restart")
    etl.seed(world)
    crashloop.seed(world, "worsening")
    metrics_address, ingress = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    settings = Settings(
        **sandboxes.settings_update(tmp, _policy(tmp, f"{target.url}/")) | {"llm_model": sandbox_llm.RUNAWAY},
        runbooks_dir=REPO / "runbooks",
        task_queue=f"dash-{uuid.uuid4().hex[:8]}",
        ingress_address=ingress,
        metrics_address=metrics_address,
    )
    settings = embedded(settings, dev_address(dev_env))
    process, url = _start_prometheus([metrics_address, ingress], tmp)
    prometheus = Prometheus(url)
    stop = asyncio.Event()
    client = dev_env.client
    try:
        async with running_worker(settings):  # connects itself, with the metrics Runtime
            ingress_task = asyncio.create_task(serve_ingress(settings, connect_client(settings), stop))
            await prometheus.until('up{job="remedium"}', lambda r: len(r) == 2 and _value(r) == 2, 90)

            etl_id = f"PDASH{uuid.uuid4().hex[:6].upper()}"
            sandboxes.pagerduty.add_incident(etl_id, etl.alert(etl_id).title)
            etl_wf = await _deliver(
                ingress,
                *triggered_delivery(
                    etl.alert(etl_id), WEBHOOK_SECRET, sandboxes.pagerduty.incidents[etl_id]["html_url"]
                ),
            )
            crash_id = f"PDASH{uuid.uuid4().hex[:6].upper()}"  # never added to PagerDuty: its notes fail
            crash_wf = await _deliver(
                ingress,
                *triggered_delivery(
                    crashloop.alert(crash_id), WEBHOOK_SECRET, f"https://pd.invalid/{crash_id}"
                ),
            )
            web = await start(client, settings, alert_for(target))
            unlisted = Alert(  # its health URL is not in the policy's http.allow
                source="manual",
                id=f"dash-{uuid.uuid4().hex[:8]}",
                title="web health check failing",
                service="web-frontend",
                severity="P2",
                annotations={"base_url": "http://127.0.0.1:9"},
            )
            # Its guard trip lands on a series the first incident's trigger started at 0: once a
            # scrape has that 0, the trip is an increase Prometheus can show, however fast it comes.
            await prometheus.until(
                f'remedium_guard_trips_total{{guard="http_allow",runbook="none",task_queue="{settings.task_queue}"}}',
                bool,
            )
            refused = await start(client, settings, unlisted)
            # An alert no runbook matches: the LLM investigates. Its series started at 0 with the
            # first incident's trigger; once a scrape has them, its calls are increases too.
            await prometheus.until(
                f'remedium_llm_calls_total{{result="answered",task_queue="{settings.task_queue}"}}', bool
            )
            investigated = await start(
                client,
                settings,
                Alert(
                    source="manual",
                    id=f"dash-llm-{uuid.uuid4().hex[:8]}",
                    title="Deployment payments/api: error rate above SLO",
                    service="payments-api",
                    severity="P2",
                ),
            )

            # The approval's counters start at 0 when it is asked; let a scrape see them first, so
            # the decision is an increase Prometheus can show.
            pending = await wait_for_stage(web, "awaiting_approval", timeout=90)
            assert pending.pending_approval is not None
            await prometheus.until(
                'remedium_approvals_total{channel="update",decision="approved",runbook="web-health-restart"}',
                bool,
            )
            await web.execute_update(
                "decide",
                DecideRequest(decision="approve", by="alice", step=pending.pending_approval.step),
                result_type=str,
            )
            outcomes: dict[str, IncidentResult] = {}
            for name, workflow_id in (("etl", etl_wf), ("crashloop", crash_wf)):
                handle = client.get_workflow_handle(workflow_id, result_type=IncidentResult)
                outcomes[name] = await asyncio.wait_for(handle.result(), timeout=180)
            outcomes["web"] = await asyncio.wait_for(web.result(), timeout=180)
            outcomes["refused"] = await asyncio.wait_for(refused.result(), timeout=180)
            deadline = time.monotonic() + 120
            while True:  # broken, it waits for a human reset: the test ends it instead
                status = await investigated.query("status", result_type=IncidentStatus)
                if status.breaker is not None and status.breaker.state == "CIRCUIT_BROKEN":
                    break
                assert time.monotonic() < deadline, f"the breaker never broke: {status.breaker}"
                await asyncio.sleep(0.3)
            await investigated.terminate("dashboard test: the breaker broke; nobody will reset it")
            await prometheus.until(
                "sum(remedium_incidents_total)",
                lambda r: bool(r) and _value(r) == 4,
            )
            # Two more scrapes of both targets, so every range query has samples after the last change.
            settled = time.time() + 2
            await prometheus.until(
                'min(timestamp(up{job="remedium"}))', lambda r: bool(r) and _value(r) > settled
            )
            yield Run(prometheus, outcomes)
            stop.set()
            await ingress_task
    finally:
        stop.set()
        _stop(process)
        target.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def _substitute(expr: str) -> str:
    for name, value in TEMPLATE.items():
        expr = expr.replace(name, value)
    return expr


def test_the_metrics_address_is_optional_and_a_busy_one_stops_the_worker_in_one_sentence() -> None:
    assert metrics_runtime_of(Settings()) is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(StartupError) as caught:
            metrics_runtime_of(Settings(metrics_address=address))
    message = str(caught.value)
    assert message.startswith(f"cannot serve metrics on REMEDIUM_METRICS_ADDRESS={address}: ")
    assert "Address already in use" in message and "\n" not in message


def test_the_dashboard_binds_its_datasource_as_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
    uses = " ".join(expr for _, expr in _panel_queries())
    for family in metrics.FAMILIES:
        assert family.name in uses, f"no panel shows {family.name}"


@pytest.mark.timeout(420)
async def test_every_panel_query_returns_data_from_the_demo_scenarios(run: Run) -> None:
    assert {name: r.outcome for name, r in run.outcomes.items()} == {
        "etl": "resolved",
        "crashloop": "escalated",
        "web": "resolved",
        "refused": "escalated",
    }
    empty = []
    for title, expr in _panel_queries():
        result = await run.prometheus.query(_substitute(expr))
        values = [float(series["value"][1]) for series in result if not math.isnan(float(series["value"][1]))]
        print(f"{title}: {expr} -> {len(result)} series, max {max(values, default=math.nan):g}")
        # Every panel shows something these incidents did; only a gauge of busy slots may be 0 once idle.
        if not values or (max(values) <= 0 and title not in IDLE_MAY_BE_ZERO):
            empty.append(f"{title}: {expr} -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


async def test_each_metric_family_has_its_labels_and_counts(run: Run) -> None:
    q = run.prometheus.query

    async def count(expr: str) -> float:
        return _value(await q(expr))

    assert await count('remedium_incidents_total{outcome="resolved",runbook="etl-source-timeout"}') == 1
    assert await count('remedium_incidents_total{outcome="escalated",runbook="crashloop-restart"}') == 1
    assert await count('remedium_incidents_total{outcome="resolved",runbook="web-health-restart"}') == 1
    assert await count('remedium_incidents_total{outcome="escalated",runbook="none"}') == 1
    assert await count('remedium_time_to_resolve_seconds_count{runbook="etl-source-timeout"}') == 1
    assert await count('remedium_time_to_resolve_seconds_count{runbook="crashloop-restart"}') == 0
    assert await count('remedium_time_to_first_action_seconds_count{runbook="crashloop-restart"}') == 1
    assert await count('remedium_time_to_first_action_seconds_sum{runbook="web-health-restart"}') > 0
    assert await count('remedium_actions_total{action="kubernetes.patch_configmap",result="succeeded"}') == 1
    assert await count('remedium_actions_total{action="kubernetes.rollout_restart",result="succeeded"}') == 1
    assert (
        await count(
            'remedium_actions_total{action="http.request",result="succeeded",runbook="web-health-restart"}'
        )
        == 1
    )
    assert (
        await count('remedium_rollbacks_total{action="kubernetes.rollout_restart",result="rolled_back"}') == 1
    )
    assert (
        await count(
            'remedium_approvals_total{channel="update",decision="approved",runbook="web-health-restart"}'
        )
        == 1
    )
    assert await count('remedium_approval_wait_seconds_count{channel="update",decision="approved"}') == 1
    assert await count('remedium_human_interventions_total{kind="approve",runbook="web-health-restart"}') == 1
    assert await count('remedium_human_interventions_total{runbook="etl-source-timeout"}') == 0
    assert await count('remedium_guard_trips_total{guard="http_allow",effect="refused",runbook="none"}') == 1
    assert (
        await count(
            'remedium_guard_trips_total{guard="approval_policy",effect="approval_forced",runbook="web-health-restart"}'
        )
        == 1
    )
    assert await count('remedium_reporter_failures_total{channel="pagerduty"}') >= 1
    assert await count('remedium_reporter_failures_total{channel="slack"}') == 0
    # The runaway investigation: answered calls, their usage and cost, then the breaker.
    usages = [sandbox_llm.usage(sandbox_llm.RUNAWAY, step) for step in range(LLM_MAX_CALLS)]
    assert await count('remedium_llm_calls_total{result="answered"}') == LLM_MAX_CALLS
    assert await count('remedium_llm_calls_total{result="failed"}') == 0
    assert await count('remedium_llm_tokens_total{kind="prompt"}') == sum(p for p, _ in usages)
    assert await count('remedium_llm_tokens_total{kind="completion"}') == sum(c for _, c in usages)
    micro_usd = sum(round(p * DEMO_LLM_PRICES[0] + c * DEMO_LLM_PRICES[1]) for p, c in usages)
    assert await count("remedium_llm_cost_microusd_total") == micro_usd
    assert await count('remedium_breaker_transitions_total{state="TRIGGERED"}') == 1
    assert await count('remedium_breaker_transitions_total{state="CIRCUIT_BROKEN"}') == 1
    assert await count('remedium_breaker_transitions_total{state="ARMED"}') == 0
    # The ingress's own counters, and the SDK's, come through the same scrape.
    assert await count('remedium_webhooks_total{source="pagerduty",outcome="started"}') == 2
    assert await count('temporal_num_pollers{poller_type="workflow_task"}') > 0
    # Labels are ours and bounded: nothing from the alerts (titles, ids, services) is a label.
    for family in metrics.FAMILIES:
        name = family.name + ("_count" if family.kind == "histogram" else "")
        for series in await q(name):
            ours = set(series["metric"]) - {
                "__name__",
                "instance",
                "job",
                "namespace",
                "task_queue",
                "workflow_type",
                "service_name",
            }
            assert ours == set(family.labels), (family.name, series["metric"])
            assert not any("PDASH" in v or "health check" in v for v in series["metric"].values())
