"""The LLM room: an OpenAI-compatible Chat Completions API, through the official `openai` client.

`REMEDIUM_LLM_BASE_URL` (ends in `/v1`), `REMEDIUM_LLM_API_KEY`, `REMEDIUM_LLM_MODEL`, the
per-million-token prices `REMEDIUM_LLM_PRICE_INPUT_PER_MTOK` / `..._OUTPUT_PER_MTOK` (USD) and
`REMEDIUM_LLM_TIMEOUT` (seconds one call may take). Without a base URL and a model no
investigation runs and incidents behave as before.

Two activities: `llm.chat` makes exactly one call (the client never retries: a retried call
may be billed twice while only one answer's `usage` is seen; the workflow schedules it with
one attempt, so every billed call is one the breaker counted) and `llm.propose` turns a
finding's proposal into the library runbook it names, refusing params the alert does not
itself contain. The API key stays in the client: it never crosses Temporal.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Self

import openai
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedium.bindings import heartbeating
from remedium.catalog import (
    Clients,
    Integration,
    IntegrationSettings,
    diagnostic_catalog,
    register_integration,
)
from remedium.errors import ErrorType
from remedium.investigator import alert_values, param_leaves
from remedium.models import Runbook
from remedium.models.llm import (
    SUBMIT_FINDING,
    ChatMessage,
    ChatRequest,
    ChatResult,
    LlmSetup,
    ProposalRequest,
    ProposedRunbook,
    ToolCall,
    finding_schema,
)
from remedium.names import LLM_CHAT_ACTIVITY, LLM_PROPOSE_ACTIVITY
from remedium.runbook import engine
from remedium.runbook.variables import var_graph

CONTENT_LIMIT = 8000  # characters of the model's text kept in history
ARGUMENTS_LIMIT = 16000


class LlmSettings(IntegrationSettings):
    model_config = SettingsConfigDict(env_prefix="REMEDIUM_LLM_")

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    price_input_per_mtok: float = Field(default=0.0, ge=0)
    price_output_per_mtok: float = Field(default=0.0, ge=0)
    timeout: float = Field(default=60.0, gt=0, description="seconds one Chat Completions call may take")

    def configured(self) -> bool:
        return bool(self.base_url and self.model)


def llm_client(settings: LlmSettings) -> openai.AsyncOpenAI | None:
    if not settings.configured():
        return None
    return openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key.get_secret_value() if settings.api_key else "unset",
        timeout=settings.timeout,
        max_retries=0,
    )


LLM = register_integration(
    Integration(
        name="llm",
        settings=LlmSettings,
        connect=llm_client,
        describe=lambda settings: f"{settings.base_url} ({settings.model})" if settings.configured() else "",
    )
)


def tool_definitions(kinds: list[str]) -> list[dict[str, Any]]:
    """One function tool per read-only diagnostic kind (its params schema), plus submit_finding."""
    catalog = diagnostic_catalog()
    tools = [
        {
            "type": "function",
            "function": {
                "name": kind,
                "description": catalog[kind].description or f"the {kind} diagnostic (read-only)",
                "parameters": catalog[kind].params_model.model_json_schema(),
            },
        }
        for kind in kinds
        if kind in catalog
    ]
    tools.append(
        {
            "type": "function",
            "function": {
                "name": SUBMIT_FINDING,
                "description": "End the investigation with your finding.",
                "parameters": finding_schema(),
            },
        }
    )
    return tools


def _wire(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


_WORD = "A-Za-z0-9_.-"


def _names(value: str, text: str) -> bool:
    """Whether `text` names `value` as a whole word: `payments-api` does not name `payments`."""
    pattern = f"(?<![{_WORD}]){re.escape(value)}(?![{_WORD}])"
    return bool(value) and re.search(pattern, text, re.IGNORECASE) is not None


def _failed(what: str, non_retryable: bool = True) -> ApplicationError:
    return ApplicationError(what, type=ErrorType.UNREACHABLE, non_retryable=non_retryable)


class LlmActivities:
    def __init__(
        self, client: openai.AsyncOpenAI | None, settings: LlmSettings, runbooks: list[Runbook]
    ) -> None:
        self._client = client
        self._settings = settings
        self._runbooks = {rb.name: rb for rb in runbooks}

    @classmethod
    def build(cls, clients: Clients, runbooks: list[Runbook]) -> Self:
        return cls(LLM.client(clients), LLM.settings_of(clients), runbooks)

    def setup(self) -> LlmSetup | None:
        """What prepare hands the workflow; None: no LLM, no investigation."""
        if self._client is None or not self._settings.model:
            return None
        return LlmSetup(
            model=self._settings.model,
            price_input_per_mtok=self._settings.price_input_per_mtok,
            price_output_per_mtok=self._settings.price_output_per_mtok,
            tools=sorted(diagnostic_catalog()),
            runbooks=sorted(self._runbooks),
        )

    @activity.defn(name=LLM_CHAT_ACTIVITY)
    async def chat(self, request: ChatRequest) -> ChatResult:
        if self._client is None or not self._settings.model:
            raise ApplicationError(
                "no LLM is configured (REMEDIUM_LLM_BASE_URL, REMEDIUM_LLM_MODEL)",
                type=ErrorType.NOT_CONFIGURED,
                non_retryable=True,
            )
        started = time.monotonic()
        try:
            async with heartbeating(LLM_CHAT_ACTIVITY):  # how a call cut by the breaker's time limit stops
                response = await self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self._settings.model,
                    messages=[_wire(m) for m in request.messages],
                    tools=tool_definitions(request.tools),
                    tool_choice="auto",
                )
        except openai.APITimeoutError:
            raise _failed(f"the model did not answer within {self._settings.timeout:g}s") from None
        except openai.APIStatusError as exc:
            raise _failed(f"the LLM API answered {exc.status_code}: {str(exc.message)[:300]}") from None
        except openai.APIError as exc:
            raise _failed(f"the LLM API failed: {str(exc)[:300]}") from None
        if not response.choices:
            raise _failed("the LLM API answered without a choice")
        choice = response.choices[0]
        calls = [
            ToolCall(
                id=c.id[:128], name=c.function.name[:128], arguments=c.function.arguments[:ARGUMENTS_LIMIT]
            )
            for c in choice.message.tool_calls or []
            if c.type == "function"
        ]
        usage = response.usage
        return ChatResult(
            content=(choice.message.content or "")[:CONTENT_LIMIT] or None,
            tool_calls=calls,
            finish_reason=str(choice.finish_reason or ""),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
            model=response.model or self._settings.model,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    @activity.defn(name=LLM_PROPOSE_ACTIVITY)
    async def propose(self, request: ProposalRequest) -> ProposedRunbook:
        """The runbook a proposal names, its params as its alert vars; params must come from the alert.

        An instruction hidden in a log line cannot pick a target: every value the model gives must
        appear in the alert itself, only the runbook's alert vars can be set (what it derives from
        facts, such as the Deployment Kubernetes reported, is rendered from the diagnostics again),
        and the runbook's own diagnostics, `decide.when` and params validation still apply.
        """
        proposal = request.proposal
        runbook = self._runbooks.get(proposal.runbook)
        if runbook is None:
            return ProposedRunbook(refused=f"runbook {proposal.runbook!r} is not in the library")
        alert_group, _ = var_graph(runbook).groups()
        unknown = sorted(set(proposal.params) - set(alert_group))
        if unknown:
            return ProposedRunbook(
                refused=f"runbook {runbook.name} has no alert var {unknown[0]!r} a proposal may set "
                f"(it may set: {', '.join(sorted(alert_group)) or 'none'})"
            )
        said = [v for v in alert_values(request.alert) if v]
        for name, value in proposal.params.items():
            for leaf in param_leaves(value):
                if not any(_names(leaf, text) for text in said):
                    return ProposedRunbook(
                        refused=f"param {name}={leaf!r} does not appear in the alert: a proposal may only "
                        "act on what the alert itself names"
                    )
        values, _ = await asyncio.to_thread(engine._alert_vars, runbook, request.alert, proposal.params)
        return ProposedRunbook(runbook=runbook, vars=values)

    def activities(self) -> list[object]:
        return [self.chat, self.propose]
