"""`remedium breaker reset ID --as USER`: a human re-arms an incident's broken LLM breaker.

It sends the workflow's `breaker_reset` update: the incident answers at once, and refuses (with
its reason, audited) a breaker that is not CIRCUIT_BROKEN or a user the policy does not allow.
The name given with `--as` is self-declared, and the audit says so.
"""

from __future__ import annotations

from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from remedium.cli.common import CommandError, connect, print_json
from remedium.models.llm import BreakerReset
from remedium.names import BREAKER_RESET_UPDATE
from remedium.settings import Settings


async def breaker_reset_command(workflow_id: str, by: str, reason: str = "", as_json: bool = False) -> int:
    """Print the incident's answer; exit 1 with one sentence when it refuses or is gone."""
    client = await connect(Settings.load())
    handle = client.get_workflow_handle(workflow_id)
    try:
        message = await handle.execute_update(
            BREAKER_RESET_UPDATE, BreakerReset(by=by, reason=reason), result_type=str
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise CommandError(f"breaker reset refused: {getattr(cause, 'message', None) or cause}") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no running incident {workflow_id!r}") from None
        raise CommandError(f"breaker reset failed: {exc.message}") from None
    if as_json:
        print_json({"workflow_id": workflow_id, "by": by, "reset": True, "message": message})
    else:
        print(message)
    return 0
