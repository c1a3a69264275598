"""Temporal names of the public contract, defined once.

Workflow types, activity names, signals, queries, updates and search attributes are what
histories record and what operators type into the UI and CLI: renaming one breaks running
incidents and replay, so every module that needs one imports it from here.
"""

from __future__ import annotations

from typing import Literal

from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE = "remedium"
DEFAULT_NAMESPACE = "default"
URGENT_SUFFIX = "-urgent"


def urgent_task_queue(task_queue: str) -> str:
    """The reserved queue for incidents the policy ranks urgent (`remedium` -> `remedium-urgent`)."""
    return task_queue + URGENT_SUFFIX


# Workflow types and fixed workflow ids.
WORKFLOW_TYPE = "IncidentWorkflow"
LIMITER_WORKFLOW_TYPE = "TargetLimiter"
FREEZE_WORKFLOW_TYPE = "Freeze"
FREEZE_WORKFLOW_ID = "remedium-freeze"
AUTONOMY_WORKFLOW_TYPE = "Autonomy"

# The engine's own activities (the workflow calls them; activities/engine.py and guards.py define them).
PREPARE_ACTIVITY = "incident.prepare"
DECIDE_ACTIVITY = "runbook.decide"
VERIFY_ACTIVITY = "runbook.verify"
REPORT_ACTIVITY = "incident.report"
ACQUIRE_SLOT_ACTIVITY = "guard.acquire_slot"
FREEZE_STATE_ACTIVITY = "guard.freeze_state"
# Re-verifies a Slack click the `decide` update carries (activities/slack.py defines it).
VERIFY_SLACK_ACTIVITY = "approval.verify_slack"
# The policy's `rules` for one step (activities/rules.py defines it).
POLICY_RULES_ACTIVITY = "policy.rules"
# The runbook's earned-autonomy entity (activities/autonomy.py defines them).
AUTONOMY_STANDING_ACTIVITY = "autonomy.standing"
AUTONOMY_REPORT_ACTIVITY = "autonomy.report"
# The LLM investigator's (activities/llm.py defines them, workflows/investigation.py calls them).
LLM_CHAT_ACTIVITY = "llm.chat"
LLM_PROPOSE_ACTIVITY = "llm.propose"
# The runbook `diagnose` kind answered by the investigator in the workflow, not by a `diagnose.*` activity.
LLM_DIAGNOSTIC_KIND = "llm"
ENGINE_ACTIVITIES = (
    PREPARE_ACTIVITY,
    DECIDE_ACTIVITY,
    VERIFY_ACTIVITY,
    REPORT_ACTIVITY,
    ACQUIRE_SLOT_ACTIVITY,
    FREEZE_STATE_ACTIVITY,
    VERIFY_SLACK_ACTIVITY,
    POLICY_RULES_ACTIVITY,
    AUTONOMY_STANDING_ACTIVITY,
    AUTONOMY_REPORT_ACTIVITY,
    LLM_CHAT_ACTIVITY,
    LLM_PROPOSE_ACTIVITY,
)

ActionPhase = Literal["dry_run", "execute", "rollback"]
ACTION_PHASES: tuple[ActionPhase, ...] = ("dry_run", "execute", "rollback")


def action_activity(action: str, phase: ActionPhase) -> str:
    """`kubernetes.rollout_restart` + `execute` -> `kubernetes.rollout_restart.execute`."""
    return f"{action}.{phase}"


def diagnostic_activity(kind: str) -> str:
    return f"diagnose.{kind}"


def report_activity(channel: str) -> str:
    return f"report.{channel}"


# Signals, queries and updates of IncidentWorkflow.
APPROVE_SIGNAL = "approve"
REJECT_SIGNAL = "reject"
EXTERNAL_UPDATE_SIGNAL = "external_update"
DECIDE_UPDATE = "decide"
STATUS_QUERY = "status"
AUDIT_QUERY = "audit"

# Of the limiter and freeze workflows.
ACQUIRE_UPDATE = "acquire"
GRANTS_QUERY = "grants"
FREEZE_UPDATE = "freeze"
UNFREEZE_UPDATE = "unfreeze"
FREEZE_STATE_QUERY = "state"
BREAKER_RESET_UPDATE = "breaker_reset"  # IncidentWorkflow's: re-arms the LLM investigation's breaker

# Of the autonomy entity (one per runbook).
OUTCOME_SIGNAL = "outcome"
SET_LEVEL_UPDATE = "set_level"
REVIEW_UPDATE = "review"
AUTONOMY_QUERY = "autonomy"

SA_SERVICE = SearchAttributeKey.for_keyword("IncidentService")
SA_SEVERITY = SearchAttributeKey.for_keyword("IncidentSeverity")
SA_STAGE = SearchAttributeKey.for_keyword("IncidentStage")
SA_RUNBOOK = SearchAttributeKey.for_keyword("RunbookName")
SEARCH_ATTRIBUTES = (SA_SERVICE, SA_SEVERITY, SA_STAGE, SA_RUNBOOK)


def incident_workflow_id(source: str, source_id: str) -> str:
    """`incident-<source>-<id>`: the same incident delivered twice starts one workflow."""
    return f"incident-{source}-{source_id}"


def limiter_workflow_id(action: str, target: str) -> str:
    return f"ratelimit/{action}/{target}"


def autonomy_workflow_id(runbook: str) -> str:
    """`autonomy-<runbook>`: one entity keeps each runbook's record and level."""
    return f"autonomy-{runbook}"
