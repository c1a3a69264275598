"""Runbook `vars:`: named values rendered once per incident, used as `vars.<name>` everywhere.

`tests/fixtures/runbooks/vars/everywhere.yaml` draws a random `token` (alert group) and a
random `label` (facts group): the same value in every stage proves each group was rendered
once and handed on, not rendered again. The flow below is the workflow's (prepare ->
diagnose -> decide -> verify -> report), through the engine's own activities.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from activities.engine import RunbookActivities
from remedium.errors import TemplateError
from remedium.models import (
    Alert,
    DecideInput,
    Fact,
    Policy,
    PrepareResult,
    ReportRequest,
    Runbook,
    RunbookDecision,
    VerifyRequest,
)
from remedium.runbook import engine
from remedium.runbook.loader import load_runbooks, validate_runbook_file
from remedium.runbook.templating import render_value
from remedium.runbook.variables import sources, var_graph
from remedium.yamldoc import Problem

REPO = Path(__file__).resolve().parent.parent
VARS = Path("tests/fixtures/runbooks/vars")  # relative, as a user would type it
NAME = "vars-everywhere"

EXPECTED_PROBLEMS = {
    "problems.yaml": [
        "8:10: var 'first' depends on itself: first -> second -> third -> first",
        "9:11: var 'second' depends on itself: second -> third -> first -> second",
        "10:10: var 'third' depends on itself: third -> first -> second -> third",
        "11:7: var 'me' depends on itself: me -> me",
        "13:10: var 'label' uses 'outcome', which vars cannot see (only alert, incident, facts, vars)",
        "18:12: vars.label uses facts (through vars.status), so it is rendered after diagnosis: "
        "diagnose cannot use it",
        "18:12: vars.status uses facts, so it is rendered after diagnosis: diagnose cannot use it",
        # the second line of a `|` block, where `{{- vars.basee }}` starts
        "24:9: unknown var 'basee' (defined: base, first, label, me, second, status, third)",
        "27:7: unknown var 'nope' (defined: base, first, label, me, second, status, third)",
        "32:12: use vars.<name>: `vars` on its own hides which var is meant",
        "37:12: unknown var 'sumary' (defined: base, first, label, me, second, status, third)",
    ],
    "no-vars.yaml": ["10:12: unknown var 'base' (this runbook defines no vars)"],
    "bad-name.yaml": [
        "8:3: vars: invalid name: expected letters, digits and '_', starting with a letter "
        "(like 'job_name'), got 'bad-name'",
        "9:3: vars: invalid name: expected letters, digits and '_', starting with a letter "
        "(like 'job_name'), got '_hidden'",
    ],
}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


@pytest.fixture
def runbook() -> Runbook:
    (loaded,) = load_runbooks([VARS / "everywhere.yaml"])
    return loaded


def alert(**annotations: str) -> Alert:
    return Alert(
        source="manual",
        id="vars-1",
        title="web health check failing",
        service="web-frontend",
        annotations=annotations or {"base_url": "http://web.test"},
    )


def fact(fact_id: str, **value: Any) -> Fact:
    return Fact(id=fact_id, kind="http", ok=True, value=value)


def lines(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


# --- the flow: each group rendered once, the same value in every stage ----------------------


async def test_each_group_is_rendered_once_and_used_in_every_stage(runbook: Runbook) -> None:
    acts = RunbookActivities([runbook], Policy())
    the_alert = alert()

    prepared: PrepareResult = await acts.prepare(the_alert)
    alert_vars = prepared.vars[NAME]
    assert sorted(alert_vars) == ["base", "health", "pool", "token"]  # no facts var before diagnosis
    token = alert_vars["token"]
    assert alert_vars["health"] == "http://web.test/health"

    # diagnose: what the diagnostic activity renders, with the vars the workflow passes it
    (spec,) = runbook.diagnose
    params = render_value(spec.with_, engine.context(the_alert, {}, alert_vars))
    assert params == {"url": f"http://web.test/health?token={token}"}

    facts = {"health": fact("health", status=503)}
    decision: RunbookDecision = await acts.decide(
        DecideInput(alert=the_alert, policy=Policy(), candidates=[runbook], facts=facts, vars=prepared.vars)
    )
    assert decision.runbook == NAME, decision.reason
    assert decision.reason == f"runbook {NAME} chosen: all conditions hold"
    assert {k: decision.vars[k] for k in alert_vars} == alert_vars  # handed on, not rendered again
    label = decision.vars["label"]
    assert decision.vars["status"] == 503  # a lone `{{ x }}` keeps x's type
    assert label.startswith("web-503-")
    (step,) = decision.steps
    assert step.params == {
        "url": "http://web.test/admin/restart",
        "json": {"pool": "web", "token": token, "label": label},
    }

    (check,) = runbook.verify.checks
    verify_params = render_value(check.with_, engine.context(the_alert, facts, decision.vars))
    assert verify_params == {"url": f"http://web.test/health?token={token}&label={label}"}
    facts["health_after"] = fact("health_after", status=200)
    request = VerifyRequest(alert=the_alert, verify=runbook.verify, facts=facts, round=1, vars=decision.vars)
    verdict = await acts.verify(request)
    assert verdict.state == "resolved", verdict.detail

    for outcome in ("resolved", "escalated"):
        report = await acts.report(
            ReportRequest(
                alert=the_alert,
                runbook=runbook,
                outcome=outcome,
                reason="r",
                facts=facts,
                actions=[],
                audit=[],
                vars=decision.vars,
            )
        )
        assert report.summary == f"{outcome}: token {token}"
        assert report.follow_ups == [f"{label} after 503"]
    assert report.escalation is not None
    assert report.escalation.message == f"http://web.test still down ({label})"

    # The values are random: another incident draws others, so equal values above mean one render.
    again = await acts.prepare(the_alert)
    assert again.vars[NAME]["token"] != token


def test_groups_and_render_order(runbook: Runbook) -> None:
    assert var_graph(runbook).groups() == (["base", "health", "token", "pool"], ["status", "label"])
    alert_vars = engine.render_alert_vars(runbook, alert())
    facts = {"health": fact("health", status=502)}
    fact_vars = engine.render_fact_vars(runbook, alert(), facts, alert_vars)
    assert sorted(fact_vars) == ["label", "status"]
    assert fact_vars["status"] == 502


def test_a_var_named_like_a_dict_method_is_the_var(tmp_path: Path, runbook: Runbook) -> None:
    data = runbook.model_dump(by_alias=True, mode="json")
    data["vars"] = {"items": "{{ alert.service }}", "keys": [1, "{{ vars.items }}"]}
    odd = Runbook.model_validate(data)
    assert engine.render_alert_vars(odd, alert()) == {"items": "web-frontend", "keys": [1, "web-frontend"]}


def test_a_value_that_is_not_json_data_is_a_render_error(runbook: Runbook) -> None:
    """Vars cross Temporal as JSON: a value that is not JSON data would differ after the trip."""
    data = runbook.model_dump(by_alias=True, mode="json")
    data["vars"]["numbers"] = "{{ range(3) }}"
    data["plan"][0]["with"]["json"]["numbers"] = "{{ vars.numbers }}"
    odd = Runbook.model_validate(data)
    assert "numbers" not in engine.render_alert_vars(odd, alert())
    facts = {"health": fact("health", status=503)}
    decision = engine.decide(DecideInput(alert=alert(), policy=Policy(), candidates=[odd], facts=facts))
    assert decision.runbook is None
    assert decision.reason.startswith(
        f"runbook {NAME}: step restart: vars.numbers could not be rendered: "
        "its value is not JSON data (range)"
    )


# --- render errors at incident time surface like any other template error -------------------


async def test_an_alert_var_that_fails_fails_the_templates_using_it(runbook: Runbook) -> None:
    acts = RunbookActivities([runbook], Policy())
    no_url = alert(other="x")
    prepared = await acts.prepare(no_url)
    assert sorted(prepared.vars[NAME]) == ["pool", "token"]  # base failed, and health with it

    # the diagnostic's params fail as a template error (the activity makes it a failed fact)
    (spec,) = runbook.diagnose
    with pytest.raises(TemplateError, match=r"vars.health has no value here"):
        render_value(spec.with_, engine.context(no_url, {}, prepared.vars[NAME]))

    # the plan fails as a plan whose template fails: the decision names the var's own error
    facts = {"health": fact("health", status=503)}
    decision = engine.decide(
        DecideInput(alert=no_url, policy=Policy(), candidates=[runbook], facts=facts, vars=prepared.vars)
    )
    assert decision.runbook is None
    assert decision.reason.startswith(
        f"runbook {NAME}: step restart: vars.base could not be rendered: "
        "'dict object' has no attribute 'base_url'"
    )


def test_a_facts_var_that_fails_fails_the_condition_using_it(runbook: Runbook) -> None:
    facts = {"health": fact("health", body="no status")}
    decision = engine.decide(DecideInput(alert=alert(), policy=Policy(), candidates=[runbook], facts=facts))
    assert decision.runbook is None
    assert decision.reason.startswith(
        f"no candidate runbook's conditions hold ({NAME}: condition `vars.status >= 500` could not be "
        "evaluated: vars.status could not be rendered: 'dict object' has no attribute 'status'"
    )


def test_a_facts_var_used_only_in_the_report_does_not_stop_the_plan(runbook: Runbook) -> None:
    data = runbook.model_dump(by_alias=True, mode="json")
    data["vars"]["lines"] = "{{ facts.health.value.lines[-1] }}"
    data["report"]["follow_ups"] = ["last line: {{ vars.lines }}"]
    odd = Runbook.model_validate(data)
    facts = {"health": fact("health", status=503)}
    decision = engine.decide(DecideInput(alert=alert(), policy=Policy(), candidates=[odd], facts=facts))
    assert decision.runbook == NAME
    assert decision.reason.startswith(
        f"runbook {NAME} chosen: all conditions hold; vars.lines could not be rendered: "
        "'dict object' has no attribute 'lines'"
    )
    assert "lines" not in decision.vars
    report = engine.report(
        ReportRequest(
            alert=alert(),
            runbook=odd,
            outcome="resolved",
            reason="",
            facts=facts,
            actions=[],
            audit=[],
            vars=decision.vars,
        )
    )
    assert report.follow_ups == [
        "[template error: vars.lines has no value here (it failed to render, or was not passed to this "
        "stage) in template 'last line: {{ vars.lines }}']"
    ]


async def test_requests_without_vars_recompute_them_from_the_runbook(runbook: Runbook) -> None:
    """A workflow older than vars passes none to verify and report: they are rendered there."""
    acts = RunbookActivities([runbook], Policy())
    facts = {"health": fact("health", status=503), "health_after": fact("health_after", status=200)}
    verdict = await acts.verify(VerifyRequest(alert=alert(), verify=runbook.verify, facts=facts, round=1))
    assert verdict.state == "resolved", verdict.detail
    report = await acts.report(
        ReportRequest(
            alert=alert(), runbook=runbook, outcome="resolved", reason="", facts=facts, actions=[], audit=[]
        )
    )
    assert report.summary.startswith("resolved: token ")
    assert report.follow_ups[0].startswith("web-503-") and report.follow_ups[0].endswith(" after 503")


# --- validation: every problem at its exact path:line:col -----------------------------------


def test_the_everywhere_fixture_is_valid() -> None:
    assert validate_runbook_file(VARS / "everywhere.yaml")[1] == []


@pytest.mark.parametrize("name", sorted(EXPECTED_PROBLEMS))
def test_vars_problems_at_exact_locations(name: str) -> None:
    runbook, problems = validate_runbook_file(VARS / name)
    assert runbook is None
    assert lines(problems) == [f"{VARS / name}:{line}" for line in EXPECTED_PROBLEMS[name]]


def test_remedium_runbook_validate_prints_them_and_exits_1() -> None:
    files = [str(VARS / name) for name in sorted(EXPECTED_PROBLEMS)]
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "remedium"), "runbook", "validate", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{file}:{line}"
        for file, name in zip(files, sorted(EXPECTED_PROBLEMS), strict=True)
        for line in EXPECTED_PROBLEMS[name]
    ]
    ok = subprocess.run(
        [str(REPO / ".venv" / "bin" / "remedium"), "runbook", "validate", str(VARS / "everywhere.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (ok.returncode, ok.stdout) == (0, "ok: 1 runbook valid\n"), ok.stderr


# --- the shipped runbooks -------------------------------------------------------------------


def test_shipped_runbooks_repeat_no_template() -> None:
    for runbook in load_runbooks([REPO / "runbooks"]):
        seen: dict[str, tuple[str | int, ...]] = {}
        for source in sources(runbook):
            if len(source.text) >= 40:
                assert source.text not in seen, f"{runbook.name}: {source.text!r} at {source.loc} and {seen}"
                seen[source.text] = source.loc


def test_shipped_crashloop_vars_name_the_deployment_from_title_or_labels() -> None:
    (crashloop,) = load_runbooks([REPO / "runbooks" / "crashloop-restart.yaml"])
    paged = Alert(source="pagerduty", id="p", title="Deployment payments/api pods in CrashLoopBackOff")
    labelled = Alert(
        source="alertmanager",
        id="a",
        title="KubePodCrashLooping",
        labels={"namespace": "shop", "deployment": "checkout-web"},
    )
    got = [engine.render_alert_vars(crashloop, a) for a in (paged, labelled)]
    assert [(v["namespace"], v["deployment"]) for v in got] == [("payments", "api"), ("shop", "checkout-web")]
