"""`remedium runbook test`: match, rendered plan and dry run for one alert, touching nothing.

Decides exactly as the worker's `runbook.decide` activity would and runs each step's dry
run, so a runbook author sees what an incident would do before any incident happens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from remedium.catalog import action_catalog
from remedium.cli.common import CommandError
from remedium.errors import ProblemsError
from remedium.models import ActionRequest, Alert, DecideInput, Fact
from remedium.policy_loader import load_policy
from remedium.runbook import engine
from remedium.runbook.loader import load_runbooks
from remedium.settings import Settings


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


async def runbook_test_command(runbook_path: str, alert_path: str, facts_path: str | None) -> int:
    """Exit 0 when the runbook matches and decides a plan; 1 when it does not."""
    return await try_runbook(Path(runbook_path), Path(alert_path), Path(facts_path) if facts_path else None)


async def try_runbook(runbook_path: Path, alert_path: Path, facts_path: Path | None) -> int:
    try:
        (runbook,) = load_runbooks([runbook_path])
    except ProblemsError as exc:
        raise CommandError(f"invalid runbook:\n{exc}") from None
    except ValueError:
        raise CommandError(f"{runbook_path} must be one runbook file") from None
    settings = Settings.load()
    try:
        policy = load_policy(settings.policy_file)
    except ProblemsError as exc:
        raise CommandError(f"invalid policy:\n{exc}") from None
    alert = _load_alert(alert_path)
    facts: dict[str, Fact] = {}
    if facts_path:
        raw = json.loads(facts_path.read_text())
        facts = {k: Fact.model_validate({"id": k, **v}) for k, v in raw.items()}

    if not engine.matches(runbook, alert):
        print(f"match: NO — runbook {runbook.name} does not match {alert.source} alert {alert.title!r}")
        return 1
    print(f"match: yes — runbook {runbook.name} matches {alert.source} alert {alert.title!r}")
    for spec in runbook.diagnose:
        state = "given" if spec.id in facts else "not run (pass --facts FILE to supply it)"
        print(f"diagnose {spec.id} ({spec.kind}): {state}")
    decision = engine.decide(DecideInput(alert=alert, policy=policy, candidates=[runbook], facts=facts))
    print(f"decide: {decision.reason}")
    if decision.runbook is None:
        return 1
    print("plan:")
    catalog = action_catalog()
    from remedium.worker import open_clients  # the worker's own clients: a dry run sees what it would

    async with open_clients(settings) as clients:
        for n, step in enumerate(decision.steps, 1):
            approval = (
                f"approval required (timeout {step.approval_timeout_s:.0f}s)"
                if step.approval_required
                else "no approval"
            )
            print(f"  {n}. {step.id}: {step.action}, risk {step.risk}, {approval}")
            if step.skip_reason:
                print(f"     skipped: {step.skip_reason}")
                continue
            print(f"     params: {json.dumps(step.params, sort_keys=True)}")
            action = catalog[step.action].build(clients)
            request = ActionRequest(
                incident_id=alert.workflow_id, step_id=step.id, action=step.action, params=step.params
            )
            dry = await action.dry_run(request, action.params_model.model_validate(step.params))
            print(f"     dry run on {dry.target}: {dry.summary}")
            for line in dry.diff.splitlines():
                print(f"       {line}")
    return 0
