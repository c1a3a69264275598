"""AutonomyWorkflow: one durable entity per runbook, keeping the record that decides its level.

A runbook earns authority on data: each finished incident reports its outcome here (the
`outcome` signal, through `signal-with-start`, counted once per incident id however often a
retry delivers it). When the next level's entry criteria hold over the incidents run at the
current level (`after`, `success_rate`, `agreement`, within `window`) the runbook is promoted;
any `demote_on` event demotes it to `demote_to` at once. A human can set the level, which
also caps it there (`remedium autonomy set`), and judge an incident after the fact
(`remedium review`). Every change is an entry in the entity's history with its reason and
the figures behind it, shown in the UI's current details and by `remedium autonomy show`.

Deterministic only: time is `workflow.now()`, and the state continues as new, carried whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from remedium.errors import ErrorType
    from remedium.models.common import utc_text
    from remedium.models.trust import (
        KEEP_HISTORY,
        KEEP_INCIDENTS,
        KEEP_SEEN,
        LEVELS,
        AutonomyState,
        AutonomyView,
        IncidentRecord,
        Level,
        LevelChange,
        LevelSet,
        OutcomeReport,
        ReviewVerdict,
        lowest,
        rank,
    )
    from remedium.names import (
        AUTONOMY_QUERY,
        AUTONOMY_WORKFLOW_TYPE,
        OUTCOME_SIGNAL,
        REVIEW_UPDATE,
        SET_LEVEL_UPDATE,
    )

# Continue-as-new well before Temporal's limits, or after this many messages in one run.
HISTORY_LIMIT = 2000
EVENTS_PER_RUN = 500


class TrustRecord:
    """The record and its rules, over the state continue-as-new carries; pure given `now`."""

    def __init__(self, state: AutonomyState) -> None:
        self.state = state

    # ------------------------------------------------------------ what the level is

    def cap(self) -> Level:
        trust = self.state.trust
        return lowest(trust.cap_for(self.state.runbook) if trust else None, self.state.human_cap)

    def level(self) -> Level:
        trust = self.state.trust
        start = trust.start_for(self.state.runbook) if trust else "advisory"
        return lowest(self.state.level or start, self.cap())

    def ensure_started(self, now: datetime) -> None:
        if self.state.level is not None:
            return
        level = self.level()
        self.state.level, self.state.since = level, now
        self._history(
            now, "start", level, None, f"new runbook record: starts at {level} (policy trust.start)"
        )

    # ------------------------------------------------------------ what changes it

    def report(self, report: OutcomeReport, now: datetime) -> bool:
        """Count one finished incident (once per incident id); promote or demote on it."""
        if report.incident_id in self.state.seen:
            return False
        if report.trust is not None:
            self.state.trust = report.trust
        self.ensure_started(now)
        self.state.seen = [*self.state.seen, report.incident_id][-KEEP_SEEN:]
        record = IncidentRecord(
            incident_id=report.incident_id,
            level=report.level,
            outcome=report.outcome,
            events=report.events,
            agreement=report.agreement,
            at=now,
        )
        self.state.incidents = [*self.state.incidents, record][-KEEP_INCIDENTS:]
        counts = self.state.totals.setdefault(report.level, {})
        for key in [report.outcome, *report.events] + (
            [] if report.agreement is None else ["agreed" if report.agreement else "disagreed"]
        ):
            counts[key] = counts.get(key, 0) + 1
        if not self._demote_on(report.events, f"incident {report.incident_id}", now):
            self._consider_promotion(now)
        return True

    def set_level(self, request: LevelSet, now: datetime) -> None:
        self.ensure_started(now)
        policy_cap = self.state.trust.cap_for(self.state.runbook) if self.state.trust else "full"
        if rank(request.level) > rank(policy_cap):
            raise ApplicationError(
                f"runbook {self.state.runbook}: level {request.level} is above the policy's cap {policy_cap}",
                type=ErrorType.ABOVE_CAP,
                non_retryable=True,
            )
        previous = self.level()
        self.state.human_cap = None if request.level == policy_cap else request.level
        self.state.level, self.state.since = request.level, now
        self._history(
            now,
            "set",
            request.level,
            previous,
            f"set by {request.by}: {request.reason}; capped at {request.level}",
            by=request.by,
        )

    def review(self, verdict: ReviewVerdict, now: datetime) -> None:
        self.ensure_started(now)
        record = next((r for r in self.state.incidents if r.incident_id == verdict.incident_id), None)
        if record is None:
            raise ApplicationError(
                f"incident {verdict.incident_id} is not in runbook {self.state.runbook}'s record",
                type=ErrorType.UNKNOWN_INCIDENT,
                non_retryable=True,
            )
        record.review = verdict.verdict
        counts = self.state.totals.setdefault(record.level, {})
        key = f"{verdict.verdict}_review"
        counts[key] = counts.get(key, 0) + 1
        why = f"incident {verdict.incident_id} reviewed {verdict.verdict} by {verdict.by}" + (
            f": {verdict.reason}" if verdict.reason else ""
        )
        self._history(now, "review", self.level(), None, why, by=verdict.by)
        if verdict.verdict == "bad":
            self._demote_on(["bad_review"], why, now)

    # ------------------------------------------------------------ the rules

    def _demote_on(self, events: list[Any], source: str, now: datetime) -> bool:
        trust = self.state.trust
        hit = [e for e in events if trust is not None and e in trust.demote_on]
        current = self.level()
        if not hit or trust is None or rank(current) <= rank(trust.demote_to):
            return bool(hit)
        target = lowest(trust.demote_to, self.cap())
        self.state.level, self.state.since = target, now
        self._history(
            now,
            "demoted",
            target,
            current,
            f"{source}: {', '.join(hit)} (policy trust.demote_on) demotes to {target} at once",
            figures={"events": hit},
        )
        return True

    def figures(self, now: datetime) -> dict[str, Any]:
        """The current level's measured record: what the next level's criteria are checked against."""
        current = self.level()
        trust = self.state.trust
        following = LEVELS[rank(current) + 1] if current != "full" else None
        rule = trust.promote.get(following) if trust is not None and following is not None else None
        since = self.state.since
        counted = [
            r
            for r in self.state.incidents
            if r.level == current
            and (since is None or r.at >= since)
            and (rule is None or rule.window is None or r.at >= now - rule.window)
            and r.outcome != "closed_upstream"
        ]
        resolved = sum(1 for r in counted if r.outcome == "resolved")
        decided = [r.agreement for r in counted if r.agreement is not None]
        return {
            "level": current,
            "incidents": len(counted),
            "resolved": resolved,
            "success_rate": round(resolved / len(counted), 4) if counted else None,
            "agreement": round(sum(decided) / len(decided), 4) if decided else None,
            "next": following,
            "criteria": rule.model_dump(mode="json") if rule is not None else None,
        }

    def _consider_promotion(self, now: datetime) -> None:
        figures = self.figures(now)
        following: Level | None = figures["next"]
        trust = self.state.trust
        if following is None or trust is None or following not in trust.promote:
            return
        rule = trust.promote[following]
        rate, agreement = figures["success_rate"], figures["agreement"]
        if figures["incidents"] < rule.after or rate is None or rate < rule.success_rate:
            return
        if rule.agreement is not None and (agreement is None or agreement < rule.agreement):
            return
        current = self.level()
        measured = (
            f"{figures['incidents']} incident(s) at {current}, success rate {rate:.0%}"
            + (f", agreement {agreement:.0%}" if agreement is not None else "")
            + f" (needs {rule.after}, {rule.success_rate:.0%}"
            + (f", agreement {rule.agreement:.0%}" if rule.agreement is not None else "")
            + ")"
        )
        cap = self.cap()
        if rank(following) > rank(cap):
            already = any(
                h.kind == "promotion_refused" and h.level == following and h.at >= (self.state.since or h.at)
                for h in self.state.history
            )
            if not already:
                who = "a human (autonomy set)" if self.state.human_cap == cap else "the policy"
                self._history(
                    now,
                    "promotion_refused",
                    following,
                    current,
                    f"{measured}: promotion to {following} refused, capped at {cap} by {who}",
                    figures=figures,
                )
            return
        self.state.level, self.state.since = following, now
        self._history(
            now, "promoted", following, current, f"{measured}: promoted to {following}", figures=figures
        )

    def _history(
        self,
        now: datetime,
        kind: Any,
        level: Level,
        previous: Level | None,
        reason: str,
        *,
        by: str = "remedium",
        figures: dict[str, Any] | None = None,
    ) -> None:
        entry = LevelChange(
            at=now, kind=kind, level=level, previous=previous, reason=reason, by=by, figures=figures or {}
        )
        self.state.history = [*self.state.history, entry][-KEEP_HISTORY:]

    def view(self, now: datetime) -> AutonomyView:
        totals = self.state.totals
        return AutonomyView(
            runbook=self.state.runbook,
            level=self.level(),
            cap=self.cap(),
            record={
                "current": self.figures(now),
                "by_level": totals,
                "incidents": len(self.state.seen),
                "rollbacks": _total(totals, "rollback"),
                "rejections": _total(totals, "rejection"),
                "verify_failed": _total(totals, "verify_failed"),
                "bad_reviews": _total(totals, "bad_review"),
                "escalated_after_action": _total(totals, "escalated_after_action"),
                "human_cap": self.state.human_cap,
            },
            history=list(self.state.history),
        )


def _total(totals: dict[str, dict[str, int]], key: str) -> int:
    return sum(counts.get(key, 0) for counts in totals.values())


def details(view: AutonomyView) -> str:
    """The UI's current details: the level, what it is measured on, the latest changes."""
    current = view.record["current"]
    lines = [
        f"### Runbook `{view.runbook}`: level **{view.level}** (cap {view.cap})",
        f"At {view.level}: {current['incidents']} incident(s), {current['resolved']} resolved"
        + (f", agreement {current['agreement']:.0%}" if current["agreement"] is not None else "")
        + (f"; next: {current['next']}" if current["next"] else ""),
        f"All time: {view.record['incidents']} incident(s), {view.record['rollbacks']} rollback(s), "
        f"{view.record['rejections']} rejection(s), {view.record['verify_failed']} failed verification(s), "
        f"{view.record['bad_reviews']} bad review(s)",
        "",
        "#### Level history (newest first)",
    ]
    lines += [f"- {utc_text(h.at)} {h.kind} → {h.level}: {h.reason}" for h in reversed(view.history[-10:])]
    lines += ["", f"Change it: `remedium autonomy set {view.runbook} LEVEL --as <you> --reason <why>`"]
    return "\n".join(lines)


@workflow.defn(name=AUTONOMY_WORKFLOW_TYPE)
class AutonomyWorkflow:
    """One runbook's record and level; it runs for as long as the runbook is used."""

    @workflow.init
    def __init__(self, state: AutonomyState) -> None:
        self._record = TrustRecord(state.model_copy(deep=True))
        self._handled = 0

    @workflow.run
    async def run(self, state: AutonomyState) -> None:
        self._record.ensure_started(workflow.now())
        self._show()
        await workflow.wait_condition(self._should_continue_as_new)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._record.state)

    @workflow.signal(name=OUTCOME_SIGNAL, description="A finished incident's outcome (counted once per id).")
    def outcome(self, report: OutcomeReport) -> None:
        self._handled += 1
        if self._record.report(report, workflow.now()):
            self._show()

    @workflow.update(name=SET_LEVEL_UPDATE, description="A human sets (and caps) the runbook's level.")
    def set_level(self, request: LevelSet) -> AutonomyView:
        self._handled += 1
        self._record.set_level(request, workflow.now())
        self._show()
        return self._record.view(workflow.now())

    @set_level.validator
    def _check_level(self, request: LevelSet) -> None:
        if not request.by or not request.reason:
            raise ValueError("a level change needs who (--as) and why (--reason)")

    @workflow.update(name=REVIEW_UPDATE, description="A human's post-hoc verdict on one incident.")
    def review(self, verdict: ReviewVerdict) -> AutonomyView:
        self._handled += 1
        self._record.review(verdict, workflow.now())
        self._show()
        return self._record.view(workflow.now())

    @review.validator
    def _check_review(self, verdict: ReviewVerdict) -> None:
        if not verdict.by:
            raise ValueError("a review needs who (--as)")
        if not any(r.incident_id == verdict.incident_id for r in self._record.state.incidents):
            raise ValueError(
                f"incident {verdict.incident_id} is not in runbook {self._record.state.runbook}'s record"
            )

    @workflow.query(name=AUTONOMY_QUERY, description="Level, cap, record and history of the runbook.")
    def state(self) -> AutonomyView:
        return self._record.view(workflow.now())

    def _show(self) -> None:
        workflow.set_current_details(details(self._record.view(workflow.now())))

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            self._handled >= EVENTS_PER_RUN
            or info.is_continue_as_new_suggested()
            or info.get_current_history_length() > HISTORY_LIMIT
        )
