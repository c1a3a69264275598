"""The monitor stage: re-run the verify checks every `every` until the verdict settles.

Moved whole out of `workflows/incident.py` (same commands, same order: the checks as
diagnostics, then the `runbook.verify` activity, then the `every` timer), so that file keeps
to its size. A verdict that names an escalation threshold (`escalate.when`) settles it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from remedium.models import Alert, Fact, RunbookDecision, VerifyRequest, VerifyVerdict
    from remedium.models.runbook import DiagnosticSpec
    from remedium.names import VERIFY_ACTIVITY
    from workflows.journal import Journal
    from workflows.retries import ENGINE_RETRY, ENGINE_TIMEOUT

Diagnose = Callable[[list[tuple[DiagnosticSpec, dict[str, Any]]]], Awaitable[None]]


async def monitor(
    alert: Alert,
    decision: RunbookDecision,
    journal: Journal,
    facts: dict[str, Fact],
    *,
    diagnose: Diagnose,
    sleep: Callable[[timedelta], Awaitable[bool]],
    stopped: Callable[[], bool],
) -> VerifyVerdict:
    """Re-run the checks every `every` until the verdict settles or `within` runs out.

    `facts` is the incident's own dict, which `diagnose` fills; `sleep` is the incident's
    timer that an upstream resolve/acknowledge cuts short (True when it did).
    """
    verify = decision.verify
    assert verify is not None
    deadline = workflow.now() + verify.within
    if verify.initial_delay > timedelta(0):
        await sleep(verify.initial_delay)
    round_ = 0
    while True:
        round_ += 1
        await diagnose([(spec, decision.vars) for spec in verify.checks])
        verdict: VerifyVerdict = await workflow.execute_activity(
            VERIFY_ACTIVITY,
            VerifyRequest(
                alert=alert,
                verify=verify,
                facts=facts,
                round=round_,
                vars=decision.vars,
                escalate_when=decision.escalate_when,
            ),
            result_type=VerifyVerdict,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        journal.record("verify", f"round {round_}: {verdict.detail}", data={"state": verdict.state})
        if verdict.state != "not_resolved" or verdict.escalate or stopped():
            return verdict
        if workflow.now() + verify.every > deadline:
            return VerifyVerdict(
                state="not_resolved", detail=f"not recovered within {verify.within}: {verdict.detail}"
            )
        if await sleep(verify.every):
            return verdict
