"""`remedium runbook test`: match, diagnostics, rendered plan and dry run for one alert, touching nothing.

Decides exactly as the worker's `runbook.decide` activity would and runs each step's dry
run, so a runbook author sees what an incident would do before any incident happens.
With `--live` the runbook's diagnostics are read from the configured systems first (GET
only, `http.allow` applied: see `runbook_live`), and the plan is decided from those facts.
A system that is not configured never ends the command: its diagnostic or dry run says
`skipped: <system> is not configured (<setting>)`. Exit 0 when the runbook matches, decides
a plan and every dry run that could run succeeded (skipped ones included); else 1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from remedium.catalog import action_catalog, diagnostic_catalog
from remedium.cli.common import CommandError, line, print_json
from remedium.cli.runbook_live import (
    DiagnosticOutcome,
    Systems,
    one_sentence,
    open_systems,
    run_diagnostics,
)
from remedium.errors import ProblemsError
from remedium.models import ActionRequest, Alert, DecideInput, Fact, Policy, RenderedStep, Runbook
from remedium.policy_loader import load_policy
from remedium.runbook import engine
from remedium.runbook.loader import load_runbooks
from remedium.settings import Settings
from remedium.summary import fact_brief, redact


def _load_alert(path: Path) -> Alert:
    """An alert as JSON, or a PagerDuty `incident.triggered` webhook body as the ingress gets it."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read alert {path}: {exc}") from None
    if isinstance(data, dict) and "event" in data:  # a PagerDuty webhook body
        from remedium.ingress.pagerduty import MalformedEvent, parse_event

        try:
            event = parse_event(path.read_bytes())
        except MalformedEvent as exc:
            raise CommandError(f"{path}: {exc}") from None
        if event.alert is None:
            raise CommandError(f"{path}: not an incident.triggered event")
        alert: Alert = event.alert
        return alert
    try:
        return Alert.model_validate(data)
    except ValidationError as exc:
        raise CommandError(f"{path}: not an alert: {exc.errors(include_url=False)[0]['msg']}") from None


def _load_facts(path: Path | None) -> dict[str, Fact]:
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read facts {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CommandError(f"{path}: facts must be an object of fact id -> fact")
    try:
        return {str(k): Fact.model_validate({"id": k, **v}) for k, v in raw.items()}
    except (TypeError, ValidationError) as exc:
        raise CommandError(f"{path}: not facts: {one_sentence(exc)}") from None


def _load_runbook(path: Path) -> Runbook:
    try:
        found = load_runbooks([path])
    except ProblemsError as exc:
        raise CommandError(f"invalid runbook:\n{exc}") from None
    if len(found) != 1:
        raise CommandError(f"{path} must be one runbook file")
    return found[0]


async def runbook_test_command(
    runbook_path: str, alert_path: str, facts_path: str | None, live: bool = False, as_json: bool = False
) -> int:
    """Exit 0 when the runbook matches, decides a plan and no dry run failed; 1 otherwise."""
    for noisy in ("remedium", "httpx"):  # start-up lines and one line per request are not findings
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        report, code = await try_runbook(
            Path(runbook_path), Path(alert_path), Path(facts_path) if facts_path else None, live
        )
    except CommandError:
        raise
    except Exception as exc:  # an author gets one sentence, never a traceback
        raise CommandError(f"runbook test could not finish: {one_sentence(exc)}") from None
    if as_json:
        print_json(report)
    else:
        _print_text(report)
    return code


async def try_runbook(
    runbook_path: Path, alert_path: Path, facts_path: Path | None, live: bool = False
) -> tuple[dict[str, Any], int]:
    """What `runbook test` found, as the document `--json` prints, and the exit code."""
    runbook = _load_runbook(runbook_path)
    try:
        settings = Settings.load()
    except ValidationError as exc:
        raise CommandError(f"invalid settings: {one_sentence(exc)}") from None
    try:
        policy = load_policy(settings.policy_file)
    except ProblemsError as exc:
        raise CommandError(f"invalid policy:\n{exc}") from None
    alert = _load_alert(alert_path)
    facts = _load_facts(facts_path)
    report: dict[str, Any] = {
        "runbook": runbook.name,
        "alert": {"source": alert.source, "id": alert.id, "title": alert.title},
        "live": live,
        "match": engine.matches(runbook, alert),
        "diagnose": [],
        "decision": None,
        "plan": [],
    }
    if not report["match"]:
        return report, 1
    outcomes = await _diagnose(runbook, alert, facts, settings, policy, live)
    report["diagnose"] = [_outcome_doc(o) for o in outcomes]
    facts = {**{o.fact.id: o.fact for o in outcomes if o.fact is not None}, **facts}
    decision = engine.decide(DecideInput(alert=alert, policy=policy, candidates=[runbook], facts=facts))
    report["decision"] = {"runbook": decision.runbook, "reason": decision.reason}
    if decision.runbook is None:
        return report, 1
    async with open_systems(settings, policy, allow_dry_run=True) as systems:
        for step in decision.steps:
            report["plan"].append(await _step_doc(step, alert, systems))
    failed = any(s["dry_run"]["status"] == "failed" for s in report["plan"])
    return report, 1 if failed else 0


async def _diagnose(
    runbook: Runbook, alert: Alert, facts: dict[str, Fact], settings: Settings, policy: Policy, live: bool
) -> list[DiagnosticOutcome]:
    """Given facts first; with `live`, every other diagnostic read from the systems (GET only)."""
    given = [
        DiagnosticOutcome(spec, "given", facts[spec.id]) for spec in runbook.diagnose if spec.id in facts
    ]
    todo = [spec for spec in runbook.diagnose if spec.id not in facts]
    if not live:
        hint = "pass --live to read it from the configured systems, or --facts FILE to supply it"
        rest = [DiagnosticOutcome(spec, "not run", reason=hint) for spec in todo]
    else:
        async with open_systems(settings, policy, allow_dry_run=False) as systems:
            alert_vars = engine.render_alert_vars(runbook, alert)
            rest = await run_diagnostics(todo, alert, alert_vars, diagnostic_catalog(), systems)
    by_id = {o.spec.id: o for o in [*given, *rest]}
    return [by_id[spec.id] for spec in runbook.diagnose]


def _outcome_doc(outcome: DiagnosticOutcome) -> dict[str, Any]:
    fact = outcome.fact
    doc: dict[str, Any] = {"id": outcome.spec.id, "kind": outcome.spec.kind, "status": outcome.status}
    if outcome.reason:
        doc["reason"] = redact(outcome.reason)
    if fact is not None and outcome.status in ("given", "live"):
        doc["fact"] = {
            "ok": fact.ok,
            "value": redact(fact.value),
            "error": redact(fact.error),
            "query": fact.query,
        }
    return doc


async def _step_doc(step: RenderedStep, alert: Alert, systems: Systems) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": step.id,
        "action": step.action,
        "risk": step.risk,
        "approval_required": step.approval_required,
        "approval_timeout_s": step.approval_timeout_s,
        "params": step.params,
    }
    if step.skip_reason:
        doc["dry_run"] = {"status": "skipped", "reason": step.skip_reason}
        return doc
    doc["dry_run"] = await _dry_run(step, alert, systems)
    return doc


async def _dry_run(step: RenderedStep, alert: Alert, systems: Systems) -> dict[str, Any]:
    """The step's dry run through read-only clients; a missing system skips it, any failure is said."""
    cls = action_catalog().get(step.action)
    if cls is None:
        return {"status": "failed", "reason": f"{step.action!r} is not a registered action"}
    request = ActionRequest(
        incident_id=alert.workflow_id, step_id=step.id, action=step.action, params=step.params
    )
    try:
        action = cls.build(systems.clients)
        dry = await action.dry_run(request, action.params_model.model_validate(step.params))
    except Exception as exc:  # the author sees why, never a traceback
        why = systems.skipped(cls, exc)
        if why is not None:
            return {"status": "skipped", "reason": why}
        return {"status": "failed", "reason": redact(one_sentence(exc))}
    return {"status": "ok", "target": dry.target, "summary": dry.summary, "diff": dry.diff}


def _print_text(report: dict[str, Any]) -> None:
    title, source = line(report["alert"]["title"]), report["alert"]["source"]
    if not report["match"]:
        print(f"match: NO — runbook {report['runbook']} does not match {source} alert {title!r}")
        return
    print(f"match: yes — runbook {report['runbook']} matches {source} alert {title!r}")
    for d in report["diagnose"]:
        head = f"diagnose {d['id']} ({d['kind']})"
        fact = d.get("fact")
        if d["status"] == "given":
            print(f"{head}: given")
        elif d["status"] == "live" and fact is not None:
            print(f"{head}: live: {line(fact_brief(fact['value']))}")
            if fact.get("query"):
                print(f"     query: {line(fact['query'])}")
        else:
            print(f"{head}: {d['status']}: {line(d.get('reason', ''))}")
    decision = report["decision"]
    print(f"decide: {line(decision['reason'])}")
    if decision["runbook"] is None:
        return
    print("plan:")
    for n, step in enumerate(report["plan"], 1):
        timeout = step["approval_timeout_s"]
        approval = "no approval"
        if step["approval_required"]:
            approval = "approval required" + (f" (timeout {timeout:.0f}s)" if timeout is not None else "")
        print(f"  {n}. {step['id']}: {step['action']}, risk {step['risk']}, {approval}")
        dry = step["dry_run"]
        print(f"     params: {json.dumps(step['params'], sort_keys=True)}")
        if dry["status"] == "ok":
            print(f"     dry run on {line(dry['target'])}: {line(dry['summary'])}")
            for diff_line in str(dry["diff"]).splitlines():
                print(f"       {diff_line}")
        else:
            print(
                f"     {'skipped' if dry['status'] == 'skipped' else 'dry run failed'}: {line(dry['reason'])}"
            )
