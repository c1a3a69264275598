"""The worker's metrics: our metric families, named once, and the Runtime that serves them.

The worker serves one Prometheus endpoint (`REMEDIUM_METRICS_ADDRESS`) for both the SDK's own
runtime metrics (`temporal_*`: task latencies, pollers, sticky cache, activity failures) and
ours (`remedium_*`). Ours are emitted through the SDK's meters rather than prometheus_client
because the workflow meter is replay-safe: an incident replayed after a cache eviction or a
worker restart is not counted twice. They are counted where the audit entry is written
(`workflows/telemetry.py`), so every audited event is counted once and only once.

Labels come from runbook names, outcomes, action kinds, channels and guard names, never from
alert content, so their cardinality is bounded by what operators configure.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig


@dataclass(frozen=True)
class Family:
    """One metric family as Prometheus shows it; `labels` are ours (the SDK adds its own)."""

    name: str
    kind: str  # "counter" or "histogram"
    labels: tuple[str, ...]
    help: str


INCIDENTS = Family(
    "remedium_incidents_total",
    "counter",
    ("outcome", "runbook"),
    "Incidents ended, by outcome and chosen runbook (none when no runbook was chosen)",
)
TIME_TO_FIRST_ACTION = Family(
    "remedium_time_to_first_action_seconds",
    "histogram",
    ("runbook",),
    "From the incident's start to its first plan step starting",
)
TIME_TO_RESOLVE = Family(
    "remedium_time_to_resolve_seconds",
    "histogram",
    ("runbook",),
    "From the incident's start to its report, for incidents that ended resolved",
)
ACTIONS = Family(
    "remedium_actions_total",
    "counter",
    ("action", "result", "runbook"),
    "Plan steps executed, by action and result (succeeded, failed)",
)
APPROVALS = Family(
    "remedium_approvals_total",
    "counter",
    ("channel", "decision", "runbook"),
    "Approval decisions by channel (signal, update, slack; none for timeouts) and decision "
    "(approved, rejected, refused, timed_out)",
)
APPROVAL_WAIT = Family(
    "remedium_approval_wait_seconds",
    "histogram",
    ("channel", "decision"),
    "From an approval request to the decision that answered it",
)
GUARD_TRIPS = Family(
    "remedium_guard_trips_total",
    "counter",
    ("guard", "effect", "runbook"),
    "Guardrail interventions by guard (blast_radius, autonomy, approval_policy, freeze, rate_limit, "
    "http_allow) "
    "and effect (refused, waited, approval_forced)",
)
ROLLBACKS = Family(
    "remedium_rollbacks_total",
    "counter",
    ("action", "result", "runbook"),
    "Checkpoints rolled back, by action and result (rolled_back, failed)",
)
REPORTER_FAILURES = Family(
    "remedium_reporter_failures_total",
    "counter",
    ("channel",),
    "Reports a channel (slack, jira, pagerduty) failed to deliver",
)
INTERVENTIONS = Family(
    "remedium_human_interventions_total",
    "counter",
    ("kind", "runbook"),
    "Times a human stepped in, by kind (approve, reject, closed_upstream): the seed's "
    "intervention frequency, per runbook",
)

LLM_CALLS = Family(
    "remedium_llm_calls_total",
    "counter",
    ("result",),
    "LLM investigator Chat Completions calls, by result (answered, failed, cut: cancelled by the "
    "breaker's time limit)",
)
LLM_TOKENS = Family(
    "remedium_llm_tokens_total",
    "counter",
    ("kind",),
    "Tokens the LLM API reported in answered calls' usage, by kind (prompt, completion)",
)
LLM_COST = Family(
    "remedium_llm_cost_microusd_total",
    "counter",
    (),
    "Millionths of a USD spent on answered LLM calls (usage times the configured prices, rounded "
    "per call): the SDK's counters are integers; divide by 1e6 for USD",
)
BREAKER_TRANSITIONS = Family(
    "remedium_breaker_transitions_total",
    "counter",
    ("state",),
    "LLM investigation circuit breaker transitions, by the state entered (TRIGGERED, "
    "CIRCUIT_BROKEN, ARMED: re-armed by a human)",
)

FAMILIES = (
    INCIDENTS,
    TIME_TO_FIRST_ACTION,
    TIME_TO_RESOLVE,
    ACTIONS,
    APPROVALS,
    APPROVAL_WAIT,
    GUARD_TRIPS,
    ROLLBACKS,
    REPORTER_FAILURES,
    INTERVENTIONS,
    LLM_CALLS,
    LLM_TOKENS,
    LLM_COST,
    BREAKER_TRANSITIONS,
)

# Every label value a family can take, so the worker can start each series at 0 when it first
# becomes possible (an incident's runbook is chosen, a plan is made, an approval is asked):
# Prometheus only sees an increase from a sample it has, and a counter born at 1 shows none.
OUTCOMES = ("resolved", "escalated", "rejected", "closed_upstream")
INTERVENTION_KINDS = ("approve", "reject", "closed_upstream")
ACTION_RESULTS = ("succeeded", "failed")
ROLLBACK_RESULTS = ("rolled_back", "failed")
APPROVAL_CHANNELS = ("signal", "update", "slack")
APPROVAL_DECISIONS = ("approved", "rejected", "refused")
GUARD_EFFECTS = (
    ("blast_radius", "refused"),
    ("autonomy", "refused"),
    ("approval_policy", "approval_forced"),
    ("freeze", "refused"),
    ("freeze", "waited"),
    ("rate_limit", "refused"),
    ("http_allow", "refused"),
)
LLM_CALL_RESULTS = ("answered", "failed", "cut")
LLM_TOKEN_KINDS = ("prompt", "completion")
BREAKER_STATES = ("TRIGGERED", "CIRCUIT_BROKEN", "ARMED")

# Incidents take seconds (an automatic fix) to hours (a human at night): buckets span both.
DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
HISTOGRAM_BUCKETS = {
    family.name: list(DURATION_BUCKETS_S) for family in FAMILIES if family.kind == "histogram"
}


def metrics_runtime(address: str) -> Runtime:
    """A Temporal Runtime serving `/metrics` on `address` (host:port), durations in seconds.

    One per process: the worker's client is connected with it, so the SDK's metrics and ours
    (emitted through that client's meters) come out of the same endpoint.
    """
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                durations_as_seconds=True,
                histogram_bucket_overrides=HISTOGRAM_BUCKETS,
            )
        )
    )
