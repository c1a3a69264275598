"""`remedium policy test POLICY --step STEP.json`: which policy rule fires for a step, and why.

The same evaluation the worker runs (`remedium.rules.decide_rules`), with no Temporal and no
system reached, so a rule can be tried before the policy is deployed. STEP.json:

    {"step": {"id": "scale-up", "action": "kubernetes.scale", "risk": "medium",
              "params": {"namespace": "payments", "name": "api", "replicas": 4}},
     "dry_run": {"summary": "...", "target": "payments/api"},    # optional
     "alert": {"source": "manual", "id": "x", "title": "..."},    # optional
     "facts": {"<id>": {"kind": "...", "ok": true, "value": ...}}, # optional
     "runbook": "payments-scale", "level": "supervised",          # optional
     "time": "2026-12-01T20:30:00+00:00"}                         # optional: now

A bad policy prints `path:line:col: message` lines and exits 1; a bad STEP.json one sentence, 1.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from remedium.cli.common import CommandError, print_json
from remedium.errors import ProblemsError
from remedium.models import Alert, DryRun, Fact, RenderedStep
from remedium.models.common import Model
from remedium.models.rule_request import RuleRequest
from remedium.models.runbook import Risk
from remedium.policy_loader import load_policy
from remedium.rules import decide_rules


class StepInput(Model):
    id: str = "step"
    action: str
    risk: Risk = "medium"
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class DryRunInput(Model):
    summary: str = ""
    target: str = ""
    diff: str = ""
    would_change: bool = True


class StepFile(Model):
    """What STEP.json holds: the step as the rules see it, and what surrounds it."""

    step: StepInput
    dry_run: DryRunInput = Field(default_factory=DryRunInput)
    alert: Alert | None = None
    facts: dict[str, Fact] = Field(default_factory=dict)
    runbook: str | None = None
    level: str | None = None
    time: datetime | None = None


def policy_test_command(policy_path: str, step_path: str, as_json: bool) -> int:
    """Print the rule that fires (or that none does), each rule's check, and the effect; 0 either way."""
    try:
        policy = load_policy(Path(policy_path))
    except ProblemsError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as exc:
        raise CommandError(f"cannot read policy {policy_path}: {exc.strerror or exc}") from None
    request = _request(policy.rules, Path(step_path))
    decision = decide_rules(request)
    if as_json:
        print_json(
            {
                "rule": decision.rule,
                "effect": decision.effect,
                "quorum": decision.quorum,
                "approvers": decision.approvers,
                "reason": decision.reason,
                "time": request.now.isoformat(),
                "checks": [check.model_dump(mode="json") for check in decision.checks],
            }
        )
        return 0
    if not policy.rules:
        print(f"{policy_path} has no rules: the policy's approval settings apply")
        return 0
    for check in decision.checks:
        print(f"  {check.id}: {check.result}: {check.detail}")
    print(decision.reason)
    return 0


def _request(rules: Any, path: Path) -> RuleRequest:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read step {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        given = StepFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise CommandError(f"{path}: {where + ': ' if where else ''}{first['msg']}") from None
    step = given.step
    now = given.time or datetime.now(UTC)
    if now.tzinfo is None:
        raise CommandError(f"{path}: time must carry a zone offset, e.g. 2026-12-01T20:30:00+00:00")
    return RuleRequest(
        rules=rules,
        step=RenderedStep(
            id=step.id,
            action=step.action,
            params=step.params,
            description=step.description,
            risk=step.risk,
            state_changing=True,
        ),
        dry_run=DryRun(
            action=step.action,
            step_id=step.id,
            target=given.dry_run.target,
            summary=given.dry_run.summary,
            diff=given.dry_run.diff,
            would_change=given.dry_run.would_change,
        ),
        alert=given.alert or Alert(source="manual", id="policy-test", title="policy test"),
        facts=given.facts,
        runbook=given.runbook,
        level=given.level,
        now=now,
    )
