"""`remedium approvals [--json]`: every approval waiting for a human, across incidents.

The on-call's worklist: which incident, which step doing what at which risk, until when, and
who approved so far (a step the policy gives a quorum waits for several approvers). Under the
table, each row's dry run and who may approve; `rule` names the policy rule that required the
approval, when one did (in `--json`, the key is present only then).
"""

from __future__ import annotations

import sys
from typing import Any

from remedium.cli.common import connect, line, print_json, print_table
from remedium.incidents import PendingRow, list_pending_approvals
from remedium.models.common import utc_text
from remedium.settings import Settings

COLUMNS = ("workflow_id", "step", "action", "risk", "deadline", "approvals")


async def approvals_command(as_json: bool) -> int:
    """A table (or `--json` objects) of pending approvals, soonest deadline first."""
    client = await connect(Settings.load())
    rows, unreadable = await list_pending_approvals(client)
    if as_json:
        print_json([_json(row) for row in rows])
    elif not rows:
        print("no pending approvals")
    else:
        print_table(COLUMNS, [_text(row) for row in rows])
        for row in rows:
            p = row.approval
            rule = f" (policy rule {p.rule})" if p.rule else ""
            print(line(f"  {row.workflow_id} {p.step}: would {p.dry_run.summary}"))
            print(line(f"    may approve: {', '.join(p.approvers)}{rule}"))
    for workflow_id in unreadable:
        print(f"remedium: {workflow_id} waits for approval but did not answer (no worker?)", file=sys.stderr)
    return 0


def _json(row: PendingRow) -> dict[str, Any]:
    p = row.approval
    return {
        "workflow_id": row.workflow_id,
        "step": p.step,
        "request": p.request,
        "action": p.action,
        "risk": p.risk,
        "deadline": p.deadline.isoformat(),
        "approvals": len(p.approved_by),
        "quorum": p.quorum,
        "approved_by": list(p.approved_by),
        "verified_only": p.verified_only,
        "approvers": list(p.approvers),
        "dry_run": p.dry_run.summary,
        **({"rule": p.rule} if p.rule else {}),
    }


def _text(row: PendingRow) -> dict[str, str]:
    p = row.approval
    so_far = f"{len(p.approved_by)} of {p.quorum}"
    if p.approved_by:
        so_far += f" ({', '.join(p.approved_by)})"
    return {
        "workflow_id": row.workflow_id,
        "step": p.step,
        "action": p.action,
        "risk": p.risk + (" (verified only)" if p.verified_only else ""),
        "deadline": utc_text(p.deadline),
        "approvals": so_far,
    }
