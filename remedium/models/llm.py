"""The LLM investigator's data: its policy section, the chat it holds, its finding, its breaker.

The model's words are untrusted: a `Finding` is validated against its schema and against
what happened (evidence names tool calls that ran, a proposal names a library runbook)
before anything reads it, and a proposal is only ever an approval request.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field

from remedium.models.alert import Alert
from remedium.models.common import Duration, Model, UserModel
from remedium.models.runbook import Runbook

BreakerState = Literal["ARMED", "TRIGGERED", "CIRCUIT_BROKEN"]
SUBMIT_FINDING = "submit_finding"  # the one tool that ends an investigation


class LlmPolicy(UserModel):
    """Policy `llm`: the hard limits of one incident's investigation (its circuit breaker)."""

    max_cost_usd: float = Field(default=0.5, ge=0, description="USD, from the API's usage and the prices")
    max_llm_calls: int = Field(default=10, ge=1, le=1000, description="Chat Completions calls")
    max_tool_calls: int = Field(default=20, ge=0, le=1000, description="diagnostics the model runs")
    max_duration: Duration = Field(default=timedelta(minutes=5), description="wall time of the investigation")
    min_confidence: float = Field(
        default=0.7, ge=0, le=1, description="below it a finding escalates instead of proposing"
    )


class LlmSetup(Model):
    """What the worker tells the workflow at prepare time: an LLM is configured, and its prices."""

    model: str
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    tools: list[str] = Field(default_factory=list, description="diagnostic kinds offered as tools")
    runbooks: list[str] = Field(default_factory=list, description="library runbooks a proposal may name")


class ToolCall(Model):
    id: str
    name: str
    arguments: str = Field(description="the JSON text the model wrote")


class ChatMessage(Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None


class ChatRequest(Model):
    incident_id: str
    messages: list[ChatMessage]
    tools: list[str] = Field(description="diagnostic kinds to offer, besides submit_finding")


class ChatResult(Model):
    """One Chat Completions answer, bounded: what the loop needs and what the breaker counts."""

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    model: str = ""
    duration_ms: int = 0


class Proposal(Model):
    runbook: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)


class Finding(Model):
    """The investigation's structured result (the `submit_finding` tool's parameters)."""

    summary: str = Field(min_length=1, max_length=2000)
    root_cause: str = Field(min_length=1, max_length=2000)
    evidence: list[str] = Field(default_factory=list, max_length=50, description="ids of tool calls")
    confidence: float = Field(ge=0, le=1)
    proposal: Proposal | None = None


class BreakerStatus(Model):
    """The `status` query's `breaker`: counters since the breaker was last armed."""

    state: BreakerState = "ARMED"
    cost_usd: float = 0.0
    llm_calls: int = 0
    tool_calls: int = 0
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BreakerReset(Model):
    """`remedium breaker reset ID --as USER`: a human re-arms a broken breaker."""

    by: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=1000)


class ProposalRequest(Model):
    alert: Alert
    proposal: Proposal


class ProposedRunbook(Model):
    """The library runbook a proposal names, with its alert vars rendered over the params; or why not."""

    runbook: Runbook | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    refused: str = ""


def finding_schema() -> dict[str, Any]:
    """The `submit_finding` tool's parameters, as the protocol fixes them."""
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "root_cause": {"type": "string"},
            "evidence": {"type": "array", "items": {"type": "string"}, "description": "tool call ids"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "proposal": {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "runbook": {"type": "string", "description": "a runbook name from the library"},
                            "params": {"type": "object", "description": "values for the runbook's vars"},
                        },
                        "required": ["runbook", "params"],
                    },
                ]
            },
        },
        "required": ["summary", "root_cause", "evidence", "confidence", "proposal"],
    }
