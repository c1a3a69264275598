"""Load the policy file with the same `path:line:col: message` errors as runbooks.

No file means the default policy (everyone may approve, every risk level waits for a human);
a file that is named but missing or invalid stops the worker instead of silently loosening it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from remedium.models.policy import Policy
from remedium.yamldoc import Problem, load_model

__all__ = ["PolicyError", "load_policy", "validate_policy_file"]


class PolicyError(Exception):
    """The policy file is missing or invalid; `problems` has every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def validate_policy_file(path: Path | str, display: str | None = None) -> list[Problem]:
    return load_model(path, Policy, display=display)[1]


def load_policy(path: Path | str | None) -> Policy:
    if path is None:
        return Policy()
    policy, problems = load_model(path, Policy)
    if policy is None:
        raise PolicyError(problems)
    return policy
