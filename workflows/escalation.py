"""Escalation thresholds (`escalate.when`): hand the incident to a human at once, at any level.

The engine evaluates the conditions (after diagnosis in `runbook.decide`, at every round in
`runbook.verify`); this module turns its answer into the hand-off. At decision time nothing
has run: the reason names the plan it would have run. At a verify round the changes made are
kept, not rolled back (a threshold says "a human decides now", not "this made it worse"):
only a `worse` verdict rolls back, and `worse_if` is judged before the thresholds.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from remedium.models import Checkpoint, RunbookDecision, VerifyVerdict
    from workflows.journal import Journal
    from workflows.retries import Abort

# Patch id: histories carry it as a marker where a threshold handed off.
ESCALATE_WHEN = "escalate-when-v1"


class HandOff(Abort):
    """An escalation threshold held: escalate now, and keep what was done (no rollback)."""


def at_decision(journal: Journal, decision: RunbookDecision) -> HandOff:
    """After diagnosis: nothing ran; say which threshold held and what would have run."""
    assert decision.escalate is not None
    plan = ", ".join(f"{s.id} ({s.action})" for s in decision.steps if s.skip_reason is None) or "nothing"
    journal.record(
        "escalation_threshold",
        f"{decision.escalate}: handed to a human before acting",
        data={"at": "decision", "condition": decision.escalate, "plan": [s.id for s in decision.steps]},
    )
    return HandOff(
        f"escalation threshold after diagnosis: {decision.escalate}; nothing was run "
        f"(the plan would have run: {plan})"
    )


def at_verify(journal: Journal, verdict: VerifyVerdict, checkpoints: list[Checkpoint]) -> HandOff:
    """At a verify round: hand off with the changes in place, and say which ones they are."""
    assert verdict.escalate is not None
    kept = ", ".join(c.step_id for c in checkpoints)
    journal.record(
        "escalation_threshold",
        f"{verdict.escalate}: handed to a human while monitoring",
        data={"at": "verify", "condition": verdict.escalate, "kept": [c.step_id for c in checkpoints]},
    )
    return HandOff(
        f"escalation threshold while monitoring: {verdict.escalate}; "
        + (f"changes kept, not rolled back: {kept}" if kept else "no change to roll back")
    )
