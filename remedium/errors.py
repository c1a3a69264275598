"""Remedium's one exception tree, and the ApplicationError `type` names activities raise.

Every error Remedium raises on purpose derives from `RemediumError`, so an entry point can
turn any of them into one sentence for the user and let nothing else through silently:

    RemediumError
    ├── ProblemsError            invalid runbook or policy files; `.problems` has every
    │                            `path:line:col: message`
    ├── TemplateError            a template or condition cannot render or evaluate
    ├── PlanError                a plan step's rendered params are invalid
    ├── SelectorError            a label selector does not parse (also a ValueError)
    ├── StartupError             the worker cannot start safely
    ├── TemporalUnreachable      no Temporal at the configured address
    │   └── CodecConfigError     REMEDIUM_CODEC_KEYS unusable (also a ValueError)
    ├── CodecKeyError            a payload's key id is not configured, or its key does not fit
    ├── DevServerError           the embedded dev server did not start
    ├── CommandError             a CLI command failed; carries its exit code
    ├── IncidentError            the client API (remedium.incidents)
    │   ├── DecisionRefused      the workflow's validator refused an approval
    │   ├── IncidentNotRunning   no open incident with that id
    │   ├── IncidentNotFound     no incident, open or closed, with that id
    │   └── IncidentUnreadable   its queries got no answer (usually: no worker)
    ├── InputRejected            a webhook request the ingress refuses (4xx)
    │   ├── Unauthorized         bad or missing signature or token (401)
    │   ├── BodyTooLarge         over the size limit (413)
    │   └── MalformedInput       not what the source sends (400); also a ValueError
    ├── ShadowError              a file that is not an incident history the shadow can read
    └── DemoError                the demo could not run

Activities do not raise these across Temporal: they raise `ApplicationError` with one of
the `type` names below, so the workflow's retry policy and tests name them without
importing the activity's module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from temporalio.client import WorkflowExecutionStatus

    from remedium.yamldoc import Problem


class RemediumError(Exception):
    """Base of every error Remedium raises on purpose; its message is one clear sentence."""


class ProblemsError(RemediumError):
    """One or more runbook or policy files are invalid; `problems` has every one of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(RemediumError):
    """A template or condition could not be rendered or evaluated."""


class PlanError(RemediumError):
    """A plan step's rendered params do not validate against its action."""


class SelectorError(RemediumError, ValueError):
    """A Kubernetes label selector that does not parse."""


class StartupError(RemediumError):
    """The worker cannot start safely; the message says why and what to do."""


class TemporalUnreachable(RemediumError):
    """No Temporal server answered at the configured address."""


class CodecConfigError(TemporalUnreachable, ValueError):
    """REMEDIUM_CODEC_KEYS cannot be used, so no connection to Temporal can be made as configured.

    A TemporalUnreachable so every entry point that connects (worker, ingress, CLI) already turns
    it into its one sentence; a ValueError for those that check configuration before connecting.
    """


class CodecKeyError(RemediumError):
    """A payload cannot be decrypted with the configured keys (its key id is named, never a key)."""


class ShadowError(RemediumError):
    """A file that is not an incident history the shadow replay can read (one sentence, for the CLI)."""


class DevServerError(RemediumError):
    """The embedded Temporal dev server could not be started."""


class CommandError(RemediumError):
    """A CLI command failed; printed as one sentence on stderr, exit `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class IncidentError(RemediumError):
    """A client-side operation on an incident workflow failed."""


class DecisionRefused(IncidentError):
    """The workflow refused an approve/reject decision; the message is its reason."""


class IncidentNotRunning(IncidentError):
    """No running incident workflow has that id."""


class IncidentNotFound(IncidentError):
    """No incident workflow, running or closed, has this id."""


class IncidentUnreadable(IncidentError):
    """The incident exists but its queries got no answer (usually: no worker is running)."""

    def __init__(
        self, workflow_id: str, workflow_status: WorkflowExecutionStatus | None, reason: str
    ) -> None:
        super().__init__(reason)
        self.workflow_id = workflow_id
        self.workflow_status = workflow_status


class InputRejected(RemediumError):
    """A webhook request the ingress refuses with a 4xx; the message is safe to return."""


class Unauthorized(InputRejected):
    """Bad or missing signature or token."""


class BodyTooLarge(InputRejected):
    """The request body is over the ingress's size limit."""


class MalformedInput(InputRejected, ValueError):
    """The body is not what the source sends."""


class DemoError(RemediumError):
    """The demo could not run (not: the incident ended otherwise than expected)."""


class ErrorType:
    """`ApplicationError.type` names: what crosses Temporal when an activity fails on purpose."""

    INVALID_PARAMS = "InvalidParams"  # params do not validate: never retried
    TEMPLATE_ERROR = "TemplateError"  # a template cannot render: never retried
    NOT_CONFIGURED = "NotConfigured"  # the system's settings are absent
    UNREACHABLE = "Unreachable"  # the system did not answer (retried)
    UNAVAILABLE = "Unavailable"  # the system answered 5xx (retried)
    QUERY_ERROR = "QueryError"  # the system refused the query as invalid
    KUBERNETES_NOT_CONFIGURED = "KubernetesNotConfigured"
    KUBERNETES_NOT_FOUND = "KubernetesNotFound"
    KUBERNETES_UNREACHABLE = "KubernetesUnreachable"
    KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"  # 429 or 5xx (retried)
    KUBERNETES_CONFLICT = "KubernetesConflict"  # 409 (retried), or a name taken by another object
    KUBERNETES_BAD_REQUEST = "KubernetesBadRequest"  # 400, 405
    KUBERNETES_UNAUTHORIZED = "KubernetesUnauthorized"  # 401
    KUBERNETES_FORBIDDEN = "KubernetesForbidden"  # 403: the worker's RBAC
    KUBERNETES_INVALID = "KubernetesInvalid"  # 422
    KUBERNETES_PAUSED = "KubernetesPaused"  # a paused Deployment is not restarted or rolled back
    KUBERNETES_NO_REVISION = "KubernetesNoRevision"  # the revision is not in the rollout history
    KUBERNETES_JOB_NOT_FAILED = "KubernetesJobNotFailed"  # only a failed Job is re-run
    KUBERNETES_ROLLOUT_FAILED = "KubernetesRolloutFailed"
    KUBERNETES_ROLLOUT_TIMEOUT = "KubernetesRolloutTimeout"
    KUBERNETES_JOB_FAILED = "KubernetesJobFailed"
    KUBERNETES_JOB_TIMEOUT = "KubernetesJobTimeout"
    REPORT_REJECTED = "ReportRejected"
    REPORT_RATE_LIMITED = "ReportRateLimited"
    REPORT_UNAVAILABLE = "ReportUnavailable"
    APPROVAL_REFUSED = "ApprovalRefused"
    GUARD_REFUSED = "GuardRefused"  # the policy forbids it (http.allow): never retried
    ABOVE_CAP = "AboveCap"  # `autonomy set` above the policy's cap
    UNKNOWN_INCIDENT = "UnknownIncident"  # a review of an incident not in the runbook's record
    BREAKER_RESET_REFUSED = "BreakerResetRefused"  # `breaker reset` by a non-approver, or too late

    @staticmethod
    def http_status(code: int) -> str:
        """`HTTP503`: an `http.request` endpoint answered a status the step did not expect."""
        return f"HTTP{code}"

    # Errors that no retry can fix; the workflow's retry policies list them.
    NON_RETRYABLE = (INVALID_PARAMS, TEMPLATE_ERROR)
