"""Earned autonomy: the policy's `trust` section and the records that cross Temporal.

A runbook climbs advisory → supervised → conditional → full on its measured record and falls
at once when it fails (workflows/autonomy.py keeps that record, one entity per runbook).
What the user writes is `extra="forbid"` (UserModel); the rest is the entity's own state,
the incident's standing and its outcome report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from remedium.models.common import Duration, Model, UserModel
from remedium.models.runbook import Risk

Level = Literal["advisory", "supervised", "conditional", "full"]
LEVELS: tuple[Level, ...] = ("advisory", "supervised", "conditional", "full")

DemoteEvent = Literal["rollback", "rejection", "verify_failed", "bad_review", "escalated_after_action"]
DEMOTE_EVENTS: tuple[DemoteEvent, ...] = (
    "rollback",
    "rejection",
    "verify_failed",
    "bad_review",
    "escalated_after_action",
)


def rank(level: Level) -> int:
    return LEVELS.index(level)


def lowest(*levels: Level | None) -> Level:
    """The lowest of the levels given (None ones ignored); full when none is given."""
    given = [lv for lv in levels if lv is not None]
    return min(given, key=rank) if given else "full"


class Promotion(UserModel):
    """Entry criteria of one level, measured over the incidents run at the level below it."""

    after: int = Field(default=10, ge=1, description="incidents at the level below, at least")
    success_rate: float = Field(default=1.0, ge=0, le=1, description="share of them resolved")
    agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="share of human decisions that approved the plan (advisory only)",
    )
    window: Duration | None = Field(
        default=None, description="only incidents finished this recently count (default: all)"
    )


class RunbookTrust(UserModel):
    """One runbook's own start level and cap, over the policy-wide ones."""

    start: Level | None = None
    cap: Level | None = None


class TrustPolicy(UserModel):
    """The policy's `trust` section: how runbooks earn and lose autonomy."""

    start: Level = Field(default="advisory", description="level of a runbook with no record yet")
    cap: Level = Field(default="full", description="no runbook rises above this")
    promote: dict[Level, Promotion] = Field(
        default_factory=dict, description="entry criteria of each level above advisory"
    )
    demote_on: list[DemoteEvent] = Field(
        default_factory=lambda: list(DEMOTE_EVENTS), description="events that demote at once"
    )
    demote_to: Level = "advisory"
    review_sample: float = Field(
        default=0.0, ge=0, le=1, description="share of supervised incidents flagged for post-hoc review"
    )
    supervised_max_risk: Risk = Field(
        default="medium", description="highest risk a supervised runbook runs without asking"
    )
    runbooks: dict[str, RunbookTrust] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if "advisory" in self.promote:
            raise ValueError("promote.advisory: advisory is the lowest level, nothing promotes into it")
        for level, rule in self.promote.items():
            if rule.agreement is not None and level != "supervised":
                raise ValueError(
                    f"promote.{level}.agreement: agreement is measured at advisory only "
                    "(it applies to promote.supervised)"
                )
        return self

    def cap_for(self, runbook: str) -> Level:
        own = self.runbooks.get(runbook)
        return lowest(self.cap, own.cap if own else None)

    def start_for(self, runbook: str) -> Level:
        own = self.runbooks.get(runbook)
        start = (own.start if own else None) or self.start
        return lowest(start, self.cap_for(runbook))


# ------------------------------------------------------------------ crossing Temporal


class StandingRequest(Model):
    """What `autonomy.standing` is asked: the level this runbook's next incident runs at."""

    runbook: str
    incident_id: str
    trust: TrustPolicy


class Standing(Model):
    level: Level
    why: str
    cap: Level


class OutcomeReport(Model):
    """One finished incident, as the runbook's record counts it (once per incident_id)."""

    incident_id: str
    runbook: str
    level: Level
    outcome: str
    events: list[DemoteEvent] = Field(default_factory=list)
    agreement: bool | None = Field(
        default=None, description="advisory: the humans approved the plan unchanged (None: no decision)"
    )
    trust: TrustPolicy | None = None


class LevelSet(Model):
    """`remedium autonomy set`: a human sets the level and caps the runbook there."""

    level: Level
    by: str
    reason: str


class ReviewVerdict(Model):
    """`remedium review`: a human's post-hoc verdict on one incident's handling."""

    incident_id: str
    verdict: Literal["good", "bad"]
    by: str
    reason: str = ""


class IncidentRecord(Model):
    incident_id: str
    level: Level
    outcome: str
    events: list[DemoteEvent] = Field(default_factory=list)
    agreement: bool | None = None
    at: datetime
    review: Literal["good", "bad"] | None = None


class LevelChange(Model):
    """One entry of the entity's history: every change of level or cap, and refused promotions."""

    at: datetime
    kind: Literal["start", "promoted", "demoted", "set", "promotion_refused", "review"]
    level: Level
    previous: Level | None = None
    reason: str
    by: str = "remedium"
    figures: dict[str, Any] = Field(default_factory=dict)


class AutonomyState(Model):
    """The entity's whole state: what continue-as-new carries."""

    runbook: str
    trust: TrustPolicy | None = None
    level: Level | None = None
    since: datetime | None = Field(default=None, description="when the current level began")
    human_cap: Level | None = None
    totals: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="level -> outcome or event -> incidents, since the start"
    )
    incidents: list[IncidentRecord] = Field(default_factory=list, description="the recent ones")
    seen: list[str] = Field(default_factory=list, description="incident ids already counted")
    history: list[LevelChange] = Field(default_factory=list)


class AutonomyView(Model):
    """What `remedium autonomy show --json` prints per runbook (and the `state` query returns)."""

    runbook: str
    level: Level
    cap: Level
    record: dict[str, Any]
    history: list[LevelChange]


KEEP_INCIDENTS = 200
KEEP_SEEN = 2000
KEEP_HISTORY = 200
