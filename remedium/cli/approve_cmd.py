"""`remedium approve` / `reject`: the decision the UI signal and the Slack button give.

It goes through the workflow's `decide` update (remedium.incidents.decide), so a refusal is
reported here at once, with the workflow's own reason, and is in the incident's audit trail.
The name given with `--as` is self-declared (nothing proves it), and the audit says so; a
policy that requires a verified channel for a risk level refuses it for such steps.
"""

from __future__ import annotations

from temporalio.service import RPCError

from remedium.cli.common import CommandError, connect, print_json
from remedium.incidents import DecisionRefused, IncidentNotRunning, decide
from remedium.models import DecideRequest
from remedium.settings import Settings


async def decide_command(
    workflow_id: str,
    verb: str,
    step: str | None,
    by: str,
    reason: str,
    request: int | None = None,
    as_json: bool = False,
) -> int:
    """Print the incident's answer; exit 1 with one sentence when it refuses or is gone.

    With `as_json`, the answer is one document: `{"workflow_id", "decision", "step", "by",
    "request", "accepted": true, "message"}` (a refusal is still one sentence on stderr).
    """
    client = await connect(Settings.load())
    decision = DecideRequest(
        decision="approve" if verb == "approve" else "reject",
        by=by,
        step=step,
        reason=reason,
        request=request,
    )
    try:
        message = await decide(client, workflow_id, decision)
    except DecisionRefused as exc:
        raise CommandError(f"{verb} refused: {exc}") from None
    except IncidentNotRunning:
        raise CommandError(f"no running incident {workflow_id!r}") from None
    except RPCError as exc:
        raise CommandError(f"{verb} failed: {exc.message}") from None
    if as_json:
        print_json(
            {
                "workflow_id": workflow_id,
                "decision": decision.decision,
                "step": step,
                "by": by,
                "request": request,
                "accepted": True,
                "message": message,
            }
        )
    else:
        print(message)
    return 0
