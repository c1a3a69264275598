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

# The engine's own activities (prepare, decide, verify, report, freeze state, slots) are local
# computations or one call to a Temporal entity workflow: a few quick retries are plenty.
ENGINE_TIMEOUT = timedelta(seconds=30)
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
# A diagnostic is a question, not a change: a few tries, then it is a failed fact.
DIAGNOSTIC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_attempts=3,
    non_retryable_error_types=list(ErrorType.NON_RETRYABLE),
)
ACTION_HEARTBEAT = timedelta(seconds=10)


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
