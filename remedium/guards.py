"""Guardrail decisions as pure functions of the policy and a step's dry run.

Pure so the workflow can evaluate them deterministically, and so they are tested without
Temporal. The durable parts (rate-limit windows, the global freeze) live in their own
entity workflows; this module only decides what a policy says about one step.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from remedium.models import DryRun, Policy, RateLimit, RenderedStep
from remedium.names import limiter_workflow_id
from remedium.selectors import selector_matches


def blast_radius_refusal(policy: Policy, step: RenderedStep, dry: DryRun) -> str | None:
    """Why the policy forbids this step, or None when it is inside the blast radius."""
    radius = policy.blast_radius
    scope = dry.scope
    if scope is None:
        return None
    if scope.namespace and not any(fnmatchcase(scope.namespace, ns) for ns in radius.namespaces):
        return (
            f"step {step.id} ({step.action}) would touch namespace {scope.namespace!r}, outside the "
            f"policy's blast radius (allowed: {', '.join(radius.namespaces) or 'none'})"
        )
    if radius.label_selector and scope.kind:
        if not selector_matches(radius.label_selector, scope.labels):
            return (
                f"step {step.id} ({step.action}) targets {scope.kind} {scope.key}, whose labels do not "
                f"match the policy's selector {radius.label_selector!r}"
            )
    if (
        radius.max_replicas_delta is not None
        and scope.replicas_before is not None
        and scope.replicas_after is not None
        and abs(scope.replicas_after - scope.replicas_before) > radius.max_replicas_delta
    ):
        return (
            f"step {step.id} would change {scope.key} from {scope.replicas_before} to "
            f"{scope.replicas_after} replicas, more than the policy's max_replicas_delta of "
            f"{radius.max_replicas_delta}"
        )
    return None


def approval_forced(policy: Policy, step: RenderedStep) -> str | None:
    """Why the policy makes this step wait for a human regardless of its risk, or None."""
    if not step.state_changing:
        return None
    if policy.autonomy == "approve_all":
        return "policy autonomy is approve_all"
    for pattern in policy.blast_radius.always_approve:
        if fnmatchcase(step.action, pattern):
            return f"policy always asks before {step.action}"
    return None


def rate_limit_for(policy: Policy, action: str, target: str) -> RateLimit | None:
    """The strictest rate limit that applies to this action on this target."""
    matching = [
        limit
        for limit in policy.rate_limits
        if fnmatchcase(action, limit.action) and fnmatchcase(target, limit.target)
    ]
    if not matching:
        return None
    return min(matching, key=lambda limit: limit.max / limit.per.total_seconds())


def limiter_id(action: str, target: str) -> str:
    """One limiter workflow per (action, target): a readable, stable workflow id."""
    return limiter_workflow_id(action, target)
