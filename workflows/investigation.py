"""The LLM investigation of an alert no runbook matches, under a circuit breaker held here.

The breaker lives in the workflow, not in the activity: before every Chat Completions call and
every tool call it checks the policy's limits (`llm.max_cost_usd` from each answer's `usage`
and the prices, `max_llm_calls`, `max_tool_calls`, `max_duration` from `workflow.now()`), so
a replayed or restarted incident enforces exactly what it enforced the first time.

ARMED -> TRIGGERED (a limit is hit: no new call starts; a call in flight at the time limit is
cut by its start-to-close timeout, which is the time left) -> CIRCUIT_BROKEN (final: the
incident waits for a human; only the `breaker_reset` update, `remedium breaker reset ID --as
USER`, re-arms it with a fresh budget, audited). Each tool call runs as the same diagnostic
activity a runbook would run. The model never acts: a finding's proposal becomes the library
runbook it names, rendered and decided as any runbook, every step waiting for a human.

A runbook's `diagnose` entry of kind `llm` runs the same investigation as one of its facts
(`diagnose`): the finding is the fact's value for `decide`, and nothing it proposes runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from remedium.errors import ErrorType
    from remedium.investigator import cost_usd, opening, parse_arguments, read_finding, untrusted
    from remedium.models import Alert, Fact, Policy, PrepareResult, Stage
    from remedium.models.llm import (
        SUBMIT_FINDING,
        BreakerReset,
        BreakerStatus,
        ChatMessage,
        ChatRequest,
        ChatResult,
        Finding,
        LlmPolicy,
        LlmSetup,
        ProposalRequest,
        ProposedRunbook,
    )
    from remedium.models.policy import ALL_RISKS
    from remedium.models.runbook import DiagnosticSpec
    from remedium.names import BREAKER_RESET_UPDATE, LLM_CHAT_ACTIVITY, LLM_PROPOSE_ACTIVITY
    from remedium.untrusted import one_line
    from workflows.journal import Journal
    from workflows.retries import ENGINE_RETRY, ENGINE_TIMEOUT, Abort, failure_message

__all__ = ["BREAKER_RESET_HELP", "BREAKER_RESET_UPDATE", "BreakerReset", "Investigator", "advisory", "asked"]
BREAKER_RESET_HELP = (
    'Re-arm a broken LLM investigation breaker: {"by": "<approver>", "reason": "<why>"} '
    "(or remedium breaker reset ID --as USER); audited."
)

# One attempt: a retried call may be billed without its usage ever reaching the breaker.
CHAT_RETRY = RetryPolicy(maximum_attempts=1)
CHAT_HEARTBEAT = timedelta(seconds=10)  # a call on a worker that died fails in seconds, not at the limit
TOOL_TIMEOUT = timedelta(seconds=30)
SHOWN = 300  # characters of model text in an audit message
UNTIL_RESET = "; no further call until a human resets the breaker"


def _cause(err: ActivityError) -> str:
    """The activity's own sentence, without the error type's name in front."""
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else failure_message(err)


def _said(text: str, limit: int = SHOWN) -> str:
    text = one_line(text)
    return text if len(text) <= limit else text[:limit] + "…"


class Host(Protocol):
    """What the investigator uses of the incident workflow that holds it."""

    def _set_stage(self, stage: Stage) -> None: ...
    def _run_diagnostic(self, spec: DiagnosticSpec, given: dict[str, Any]) -> Awaitable[Fact]: ...
    def _stopped(self) -> bool: ...
    def _update_details(self) -> None: ...


class Investigator:
    """One incident's investigation: the conversation, the breaker, the finding."""

    def __init__(
        self,
        journal: Journal,
        policy: Callable[[], Policy | None],
        *,
        host: Host,
    ) -> None:
        self._journal = journal
        self._policy = policy
        self._set_stage = host._set_stage
        self._run_diagnostic = host._run_diagnostic
        self._stopped = host._stopped
        self._changed = host._update_details
        self.setup: LlmSetup | None = None  # from prepare; None: no LLM configured
        self.breaker: BreakerStatus | None = None  # None: no investigation in this incident
        self.finding: Finding | None = None
        self._reset: BreakerReset | None = None
        self._armed_at: datetime | None = None
        self._call_ids: set[str] = set()
        self._waiting = False  # a broken breaker holds the incident until a reset or the timeout

    # ------------------------------------------------------------------ the investigation

    async def investigate(self, alert: Alert, prepared: PrepareResult) -> PrepareResult:
        """The proposed runbook as the only candidate, at advisory level; else Abort with the reason."""
        setup = prepared.llm
        assert setup is not None
        limits = prepared.policy.llm
        self._set_stage("diagnosing")
        self._journal.record(
            "investigation",
            f"no runbook matches: investigating with {setup.model} (read-only tools: "
            f"{', '.join(setup.tools) or 'none'})",
            data={"model": setup.model, "tools": setup.tools},
        )
        self._arm()
        messages = opening(alert, setup.runbooks)
        while True:
            finding = await self._converse(messages, setup, limits.max_duration)
            if finding is not None:
                break
            await self._wait_for_reset()
        return await self._conclude(alert, prepared, finding)

    async def _converse(
        self, messages: list[ChatMessage], setup: LlmSetup, max_duration: timedelta
    ) -> Finding | None:
        """Talk until a finding (returned) or the breaker breaks (None); other failures Abort."""
        while True:
            if (limit := self._limit_hit("llm")) is not None:
                self._break(limit)
                return None
            remaining = self._remaining(max_duration)
            try:
                answer: ChatResult = await workflow.execute_activity(
                    LLM_CHAT_ACTIVITY,
                    ChatRequest(
                        incident_id=workflow.info().workflow_id, messages=messages, tools=setup.tools
                    ),
                    result_type=ChatResult,
                    start_to_close_timeout=remaining,
                    heartbeat_timeout=CHAT_HEARTBEAT,
                    retry_policy=CHAT_RETRY,
                )
            except ActivityError as err:
                cut = isinstance(err.cause, ActivityTimeout) and err.cause.type == TimeoutType.START_TO_CLOSE
                self._journal.record(  # an unanswered call is on record (and counted) too
                    "llm_call_failed",
                    "LLM call "
                    + ("cut by the breaker's time limit" if cut else f"failed: {_said(_cause(err))}"),
                    data={"result": "cut" if cut else "failed"},
                )
                if cut:  # its start-to-close timeout is the time the breaker had left
                    self._break(
                        f"max_duration of {max_duration} reached with a model call in flight (cancelled)"
                    )
                    return None
                raise Abort(f"LLM investigation failed: {_cause(err)}") from None
            self._account(answer, setup)
            messages.append(
                ChatMessage(role="assistant", content=answer.content, tool_calls=answer.tool_calls)
            )
            if not answer.tool_calls:
                raise Abort(
                    "LLM investigation failed: invalid output: the model answered without calling "
                    f"submit_finding: {_said(answer.content or '(empty)')!r}"
                )
            for index, call in enumerate(answer.tool_calls):
                if call.name == SUBMIT_FINDING:
                    return self._finding(call.arguments, setup)
                if call.name not in setup.tools:
                    messages.append(
                        self._tool_reply(call.id, call.name, {"error": f"no tool named {call.name!r}"})
                    )
                    continue
                if (limit := self._limit_hit("tool")) is not None:
                    for skipped in answer.tool_calls[
                        index:
                    ]:  # every call gets an answer, so the chat stays valid
                        messages.append(
                            self._tool_reply(skipped.id, skipped.name, {"error": "not run: circuit breaker"})
                        )
                    self._break(limit)
                    return None
                messages.append(await self._tool(call.id, call.name, call.arguments, max_duration))

    async def _tool(self, call_id: str, kind: str, arguments: str, max_duration: timedelta) -> ChatMessage:
        """The diagnostic a runbook would run, its result bounded and wrapped as untrusted."""
        assert self.breaker is not None
        self.breaker.tool_calls += 1
        self._call_ids.add(call_id)
        params = parse_arguments(arguments)
        if isinstance(params, str):
            result: dict[str, Any] = {"error": params}
        else:
            spec = DiagnosticSpec(
                id=f"llm-{self.breaker.tool_calls}",
                kind=kind,
                with_=params,
                timeout=min(TOOL_TIMEOUT, max(self._remaining(max_duration), timedelta(seconds=1))),
            )
            fact = await self._run_diagnostic(spec, {})
            result = {"ok": fact.ok, "value": fact.value} if fact.ok else {"ok": False, "error": fact.error}
            self._journal.record(
                "llm_tool",
                f"tool call {_said(call_id, 64)}: {kind} "
                + ("ok" if fact.ok else f"failed: {_said(fact.error or '')}"),
                data={"tool_call_id": call_id, "kind": kind, "ok": fact.ok, "query": fact.query},
            )
        self._update()
        return self._tool_reply(call_id, kind, result)

    @staticmethod
    def _tool_reply(call_id: str, kind: str, result: dict[str, Any]) -> ChatMessage:
        return ChatMessage(role="tool", tool_call_id=call_id, content=untrusted(f"tool:{kind}", result))

    def _finding(self, arguments: str, setup: LlmSetup) -> Finding:
        finding = read_finding(arguments, self._call_ids, setup.runbooks)
        if isinstance(finding, str):
            self._journal.record("finding", f"invalid finding: {_said(finding)}", data={"valid": False})
            raise Abort(f"LLM investigation failed: invalid output: {finding}")
        self.finding = finding
        proposal = finding.proposal
        self._journal.record(
            "finding",
            f"finding (untrusted model output, confidence {finding.confidence:.2f}): "
            f"{_said(finding.summary)}; root cause: {_said(finding.root_cause)}"
            + (f"; proposes runbook {proposal.runbook}" if proposal else "; no proposal"),
            data={"valid": True, **finding.model_dump(mode="json")},
        )
        self._update()
        return finding

    async def _conclude(self, alert: Alert, prepared: PrepareResult, finding: Finding) -> PrepareResult:
        """A confident proposal becomes an approval request; anything else escalates with the finding."""
        limits = prepared.policy.llm
        told = (
            f"investigation finding (untrusted model output): {_said(finding.summary)}; "
            f"root cause: {_said(finding.root_cause)}"
        )
        if finding.proposal is None:
            raise Abort(f"{told}; no runbook proposed")
        if finding.confidence < limits.min_confidence:
            raise Abort(
                f"{told}; confidence {finding.confidence:.2f} is below the policy's "
                f"min_confidence {limits.min_confidence:.2f}"
            )
        proposed: ProposedRunbook = await workflow.execute_activity(
            LLM_PROPOSE_ACTIVITY,
            ProposalRequest(alert=alert, proposal=finding.proposal),
            result_type=ProposedRunbook,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        if proposed.runbook is None:
            self._journal.record("finding", f"proposal refused: {proposed.refused}", data={"valid": False})
            raise Abort(f"{told}; its proposal was refused: {proposed.refused}")
        self._journal.record(
            "finding",
            f"proposal {proposed.runbook.name} becomes an approval request at advisory level: every step "
            "waits for a human",
            data={"runbook": proposed.runbook.name, "vars": proposed.vars, "level": "advisory"},
        )
        return prepared.model_copy(
            update={
                "policy": advisory(prepared.policy),
                "candidates": [proposed.runbook],
                "vars": {proposed.runbook.name: proposed.vars},
            }
        )

    # ------------------------------------------------------------------ a runbook's `llm` diagnostic

    async def diagnose(self, spec: DiagnosticSpec, alert: Alert) -> Fact:
        """A `diagnose` entry of kind `llm`: the investigation as a fact whose value is the finding.

        Same conversation, breaker and audit kinds as for an unmatched alert, but it never acts
        and never holds the incident: a broken breaker, a failed call or an invalid finding is a
        failed fact, so the runbook's `decide` sees it like any diagnostic that failed.
        """
        question, setup = str(spec.with_.get("question", "")), self.setup

        def failed(error: str) -> Fact:
            return Fact(id=spec.id, kind=spec.kind, ok=False, error=error, query=question)

        if setup is None:
            return failed("LLM not configured (REMEDIUM_LLM_BASE_URL, REMEDIUM_LLM_MODEL)")
        self._journal.record(
            "investigation",
            f"diagnostic {spec.id}: asking {setup.model} "
            f"(read-only tools: {', '.join(setup.tools) or 'none'})",
            data={"model": setup.model, "tools": setup.tools, "diagnostic": spec.id},
        )
        if self.breaker is None:
            self._arm()  # one breaker per incident, however many `llm` entries share it
        elif self.breaker.state == "CIRCUIT_BROKEN":
            return failed(f"circuit breaker: {self.breaker.reason.removesuffix(UNTIL_RESET)}")
        started = workflow.now()
        try:
            finding = await self._converse(
                asked(alert, setup.runbooks, question), setup, self._limits().max_duration
            )
        except Abort as abort:
            return failed(abort.reason)
        if finding is None:
            assert self.breaker is not None
            return failed(f"circuit breaker: {self.breaker.reason.removesuffix(UNTIL_RESET)}")
        return Fact(
            id=spec.id,
            kind=spec.kind,
            ok=True,
            value=finding.model_dump(mode="json"),
            query=question,
            duration_ms=int((workflow.now() - started).total_seconds() * 1000),
        )

    # ------------------------------------------------------------------ the breaker

    def _arm(self) -> None:
        self.breaker = BreakerStatus(state="ARMED")
        self._armed_at = workflow.now()
        self._update()

    def _remaining(self, max_duration: timedelta) -> timedelta:
        assert self._armed_at is not None
        return self._armed_at + max_duration - workflow.now()

    def _limit_hit(self, before: str) -> str | None:
        """The limit a new call would cross, or None."""
        assert self.breaker is not None
        limits = self._limits()
        duration = limits.max_duration
        b = self.breaker
        if b.cost_usd >= limits.max_cost_usd:
            return f"max_cost_usd of {limits.max_cost_usd} reached (${b.cost_usd:.6f} spent)"
        if before == "llm" and b.llm_calls >= limits.max_llm_calls:
            return f"max_llm_calls of {limits.max_llm_calls} reached"
        if before == "tool" and b.tool_calls >= limits.max_tool_calls:
            return f"max_tool_calls of {limits.max_tool_calls} reached"
        if self._remaining(duration) <= timedelta(0):
            return f"max_duration of {duration} reached"
        return None

    def _limits(self) -> LlmPolicy:
        policy = self._policy()
        assert policy is not None
        return policy.llm

    def _account(self, answer: ChatResult, setup: LlmSetup) -> None:
        assert self.breaker is not None
        cost = cost_usd(
            answer.prompt_tokens,
            answer.completion_tokens,
            setup.price_input_per_mtok,
            setup.price_output_per_mtok,
        )
        b = self.breaker
        b.llm_calls += 1
        b.prompt_tokens += answer.prompt_tokens
        b.completion_tokens += answer.completion_tokens
        b.cost_usd = round(b.cost_usd + cost, 9)
        self._journal.record(
            "llm_call",
            f"LLM call {b.llm_calls}: {answer.prompt_tokens} prompt + {answer.completion_tokens} completion "
            f"tokens, ${cost:.6f} (total ${b.cost_usd:.6f}), {answer.duration_ms} ms, "
            + (f"{len(answer.tool_calls)} tool call(s)" if answer.tool_calls else "no tool call"),
            data={
                "call": b.llm_calls,
                "model": answer.model,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.total_tokens,
                "cost_usd": cost,
                "total_cost_usd": b.cost_usd,
                "duration_ms": answer.duration_ms,
                "tools": [c.name for c in answer.tool_calls],
            },
        )
        self._update()

    def _transition(self, to: str, reason: str, actor: str = "remedium") -> None:
        assert self.breaker is not None
        was = self.breaker.state
        self.breaker.state = to  # type: ignore[assignment]
        self.breaker.reason = reason
        b = self.breaker
        self._journal.record(
            "breaker",
            f"breaker {was} -> {to}: {reason}",
            actor=actor,
            data={
                "from": was,
                "to": to,
                "reason": reason,
                "cost_usd": b.cost_usd,
                "llm_calls": b.llm_calls,
                "tool_calls": b.tool_calls,
            },
        )
        self._update()

    def _break(self, limit: str) -> None:
        """TRIGGERED at the limit; nothing is in flight any more, so at once CIRCUIT_BROKEN."""
        self._transition("TRIGGERED", limit)
        self._transition("CIRCUIT_BROKEN", limit + UNTIL_RESET)

    async def _wait_for_reset(self) -> None:
        """Hold the incident for a human; without a reset in the approval timeout, escalate."""
        policy = self._policy()
        assert policy is not None and self.breaker is not None
        timeout = policy.approval.timeout
        broken = self.breaker.reason
        self._set_stage("escalated")
        self._waiting = True
        try:
            await workflow.wait_condition(lambda: self._reset is not None or self._stopped(), timeout=timeout)
        except TimeoutError:
            raise Abort(f"circuit breaker: {broken}; not reset within {timeout}") from None
        finally:
            self._waiting = False
        if self._stopped():
            raise Abort(
                f"circuit breaker: {broken}; the incident was closed upstream", outcome="closed_upstream"
            )
        self._reset = None
        self._set_stage("diagnosing")

    def reset(self, request: BreakerReset) -> str:
        """The `breaker_reset` update: only a broken breaker, only by an allowed approver."""
        policy = self._policy()
        state = self.breaker.state if self.breaker else "none (no investigation)"
        why = None
        if state != "CIRCUIT_BROKEN":
            why = f"the breaker is {state}, not CIRCUIT_BROKEN: nothing to reset"
        elif not self._waiting:
            why = "the incident no longer waits for a reset: it has escalated"
        elif policy is not None and not policy.approval.allows(request.by):
            why = f"{request.by} may not reset the breaker: not an approver in the policy"
        if why is not None:
            self._journal.record(
                "breaker_refused", f"breaker reset by {request.by} refused: {why}", actor=request.by
            )
            raise ApplicationError(why, type=ErrorType.BREAKER_RESET_REFUSED, non_retryable=True)
        self._reset = request
        self._transition(
            "ARMED",
            f"reset by {request.by} (self-declared)" + (f": {request.reason}" if request.reason else ""),
            actor=request.by,
        )
        self._armed_at = workflow.now()
        assert self.breaker is not None
        self.breaker = BreakerStatus(state="ARMED", reason=self.breaker.reason)
        self._update()
        return f"breaker re-armed by {request.by}"

    def status_fields(self) -> dict[str, Any]:
        """The `status` query's `breaker` and `finding`."""
        return {"breaker": self.breaker, "finding": self.finding}

    def _update(self) -> None:
        """The `status` query and the UI's current details follow the breaker."""
        self._changed()


def asked(alert: Alert, runbooks: list[str], question: str) -> list[ChatMessage]:
    """The opening for a runbook's question: a runbook matched, and its author (trusted) asks."""
    system, user = opening(alert, runbooks)
    content = (user.content or "").replace(
        "Investigate this alert (no runbook matches it):",
        f"A runbook matched this alert and asks you, before it decides: {question}\nInvestigate the alert:",
        1,
    )
    return [system, user.model_copy(update={"content": content})]


def advisory(policy: Policy) -> Policy:
    """The policy a proposal runs under: every state-changing step of every risk waits for a human."""
    approval = policy.approval.model_copy(update={"required_for": list(ALL_RISKS)})
    autonomy = "dry_run_only" if policy.autonomy == "dry_run_only" else "approve_all"
    update: dict[str, Any] = {"approval": approval, "autonomy": autonomy}
    if getattr(policy, "rules", None):  # no policy rule may let a proposed step run unasked
        update["rules"] = [rule for rule in policy.rules if rule.effect != "allow"]
    return policy.model_copy(update=update)
