"""How long each kind of activity may take, and how often it is tried again.

One place for the incident's stages and its guardrails, so the engine's own calls, the
diagnostics and every action phase are retried the same way wherever they are scheduled.
These values are not in history, but changing them changes how an incident behaves.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from remedium.errors import ErrorType, RemediumError
    from remedium.models import Outcome

# Every activity has an attempt timeout (start-to-close, and a heartbeat timeout for those that
# may run longer): an attempt on a worker that died is then retried on a live one within
# seconds, instead of holding its fact or step until the overall deadline (issue 12).

# The engine's own activities (prepare, decide, verify, report, freeze state, slots) are local
# computations or one call to a Temporal entity workflow: seconds per attempt, a few quick retries.
ENGINE_TIMEOUT = timedelta(seconds=10)
ENGINE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# ~2.5 minutes of retries: an API server restarting or a brief network partition delays
# a step instead of failing it; non-retryable errors (404, 403, bad params) stop at once.
ACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=list(ErrorType.NON_RETRYABLE),
)
# A diagnostic is a question, not a change: a few tries, then it is a failed fact. Five, not
# three: an attempt lost with its worker (a heartbeat timeout) or taken by a worker just
# restarted and still starved while it warms up costs a try; the runbook `timeout` still
# bounds them all (a diagnostic answering 500 fails after 1+2+4+4 s of backoff).
# No attempt count: a diagnostic is retried until its runbook `timeout` (schedule-to-close)
# runs out, so a few refused connections or dead workers early on never use up its budget.
DIAGNOSTIC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=4),
    maximum_attempts=0,
    non_retryable_error_types=list(ErrorType.NON_RETRYABLE),
)
# The activity wrappers (`remedium.bindings`) heartbeat every HEARTBEAT_EVERY while they run.
# A diagnostic or a report is a question: a dead worker is given up on after 5 s. An action's
# attempt is a change: 10 s, so that a worker whose event loop is briefly starved (2 cores, a
# storm) is not taken for dead and its step run again elsewhere.
DIAGNOSTIC_HEARTBEAT = timedelta(seconds=5)
REPORT_HEARTBEAT = timedelta(seconds=5)
ACTION_HEARTBEAT = timedelta(seconds=10)


def diagnostic_heartbeat(timeout: timedelta) -> timedelta:
    """A diagnostic's heartbeat timeout, never longer than its runbook `timeout`.

    The diagnostic keeps its runbook `timeout` as its overall deadline and as the bound of
    each attempt; an attempt whose worker stops heartbeating is retried at once on another.
    """
    return min(DIAGNOSTIC_HEARTBEAT, timeout)


def failure_message(err: BaseException) -> str:
    """What is left once retries are spent: the innermost cause, not Temporal's wrappers."""
    cause = err.cause if isinstance(err, ActivityError) else None
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return str(cause or err)


class Abort(RemediumError):
    """The plan cannot go on; the reason is escalated with everything gathered so far."""

    def __init__(self, reason: str, outcome: Outcome = "escalated") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome: Outcome = outcome


def diagnostic_failure(err: ActivityError, timeout: timedelta) -> tuple[str, bool]:
    """What a failed diagnostic's fact says, and whether the policy refused it (not a failure)."""
    if isinstance(err.cause, ApplicationError) and err.cause.type == ErrorType.GUARD_REFUSED:
        return err.cause.message, True  # the policy's own words, without the type name
    error = failure_message(err)
    if err.retry_state == RetryState.TIMEOUT:
        error = f"timed out: no answer within its {timeout} timeout (last: {error})"
    return error, False
