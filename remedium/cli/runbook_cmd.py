"""`remedium runbook validate`: check runbooks (and a policy file) exactly as the worker will.

Directories are read the way the worker reads its runbooks directory; a file given by name
whose top level says `kind: Policy` is checked as the policy, and so is one without a `kind`
whose keys are policy sections (the worker accepts a policy file without `kind`). One
`path:line:col: message` line per problem, so editors and CI can jump straight to it.
"""

from __future__ import annotations

from pathlib import Path

from remedium.cli.common import print_json
from remedium.models.policy import Policy
from remedium.policy_loader import validate_policy_file
from remedium.runbook.loader import collect_runbooks, expand_paths
from remedium.yamldoc import Problem, read_yaml


def validate_command(paths: list[str], as_json: bool = False) -> int:
    """Print every problem (or a one-line summary when there is none); 0 when all is valid.

    With `as_json`, one document instead: `{"ok", "runbooks", "policies", "problems": [{path,
    line, col, message}]}`, so CI can annotate each problem without parsing text.
    """
    runbook_args: list[str] = []
    problems: list[Problem] = []
    policies = 0
    order: dict[str, int] = {}
    for index, given in enumerate(paths):
        if _is_policy(given):
            policies += 1
            order[given] = index
            problems += validate_policy_file(given)
        else:
            runbook_args.append(given)
            files, missing = expand_paths([given])
            order.update((file, index) for file in [*files, *(p.path for p in missing)])
    runbooks, runbook_problems = collect_runbooks(runbook_args)
    problems += runbook_problems
    problems.sort(key=lambda p: order.get(p.path, len(paths)))  # stable: file order is kept
    if as_json:
        print_json(
            {
                "ok": not problems,
                "runbooks": len(runbooks),
                "policies": policies,
                "problems": [
                    {"path": p.path, "line": p.line, "col": p.col, "message": p.message} for p in problems
                ],
            }
        )
        return 1 if problems else 0
    for problem in problems:
        print(problem)
    if problems:
        return 1
    summary = f"{len(runbooks)} runbook{'' if len(runbooks) == 1 else 's'}"
    if policies:
        summary += f" and {policies} polic{'y' if policies == 1 else 'ies'}"
    print(f"ok: {summary} valid")
    return 0


POLICY_SECTIONS = frozenset(
    field.alias or name for name, field in Policy.model_fields.items() if name not in ("api_version", "kind")
)


def _is_policy(given: str) -> bool:
    if not Path(given).is_file():
        return False
    doc, _ = read_yaml(given)
    if doc is None or not isinstance(doc.data, dict):
        return False
    if "kind" in doc.data:
        return bool(doc.data["kind"] == "Policy")
    keys = {str(k) for k in doc.data}
    return bool(keys) and keys <= POLICY_SECTIONS | {"apiVersion"}
