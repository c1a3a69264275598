"""Load the policy file with the same `path:line:col: message` errors as runbooks.

No file means the default policy (everyone may approve, every risk level waits for a human);
a file that is named but missing or invalid stops the worker instead of silently loosening it.
"""

from __future__ import annotations

from pathlib import Path

from remedium.errors import ProblemsError
from remedium.models.policy import Policy
from remedium.yamldoc import Problem, load_model

__all__ = ["load_policy", "validate_policy_file"]


def validate_policy_file(path: Path | str, display: str | None = None) -> list[Problem]:
    return load_model(path, Policy, display=display)[1]


def load_policy(path: Path | str | None) -> Policy:
    if path is None:
        return Policy()
    policy, problems = load_model(path, Policy)
    if policy is None:
        raise ProblemsError(problems)
    return policy
