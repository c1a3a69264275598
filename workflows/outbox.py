"""The incident's outbox to human channels: ordered per channel, never in remediation's way.

Each channel (Slack, Jira, PagerDuty) gets its own queue drained by a background task in
the workflow, so a slow or failing channel delays neither remediation nor the others, and
events reach a channel in order (the ticket exists before its comments). A channel that
keeps failing is recorded in the audit trail, announced at once on the channels that still
work (a `degraded` event), and named again on every later event they carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from remedium.models import ReportEvent, ReportResult
    from remedium.names import report_activity
    from workflows.retries import REPORT_HEARTBEAT

REPORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=6,
)
REPORT_ATTEMPT_TIMEOUT = timedelta(seconds=30)

Recorder = Callable[[str, str, dict[str, object]], None]
FailureHook = Callable[[str, str], None]


class Outbox:
    """One ordered queue and one drain task per channel, created when the incident starts."""

    def __init__(self, channels: list[str], record: Recorder, on_failure: FailureHook | None = None) -> None:
        self._queues: dict[str, list[ReportEvent]] = {c: [] for c in channels}
        self._busy: dict[str, bool] = dict.fromkeys(channels, False)
        self._failed: dict[str, str] = {}
        self._closing = False
        self._record = record
        self._on_failure = on_failure
        self._tasks = [asyncio.create_task(self._drain(channel)) for channel in channels]

    def post(self, event: ReportEvent) -> None:
        """Queue without waiting: reporting must never hold up a remediation step."""
        for channel, queue in self._queues.items():
            if channel in self._failed and event.kind != "outcome":
                continue  # a dead channel gets one last try with the outcome only
            queue.append(self._with_degraded_note(channel, event))

    async def close(self, within: timedelta) -> None:
        """Let queued events go out (bounded), then stop the channel tasks."""
        self._closing = True
        try:
            await workflow.wait_condition(self._idle, timeout=within)
        except TimeoutError:
            for channel, queue in self._queues.items():
                if queue:
                    self._record(
                        "report_failed",
                        f"{channel}: {len(queue)} report(s) not delivered within {within}",
                        {"channel": channel},
                    )
        for task in self._tasks:
            task.cancel()

    def _idle(self) -> bool:
        return not any(self._queues.values()) and not any(self._busy.values())

    def _with_degraded_note(self, channel: str, event: ReportEvent) -> ReportEvent:
        """Readers of one channel learn that another went dark, on every event until the end."""
        others = {c: why for c, why in self._failed.items() if c != channel}
        if not others:
            return event
        note = "\n".join(f"> Reporting to {c} failed: {why}" for c, why in sorted(others.items()))
        return event.model_copy(update={"markdown": f"{note}\n\n{event.markdown}".strip()})

    async def _drain(self, channel: str) -> None:
        """One event at a time per channel, so a ticket exists before its comments."""
        queue = self._queues[channel]
        while True:
            await workflow.wait_condition(lambda: bool(queue))
            event = queue.pop(0)
            if self._skip_after_failure(channel, event):
                continue
            self._busy[channel] = True
            try:
                await self._send(channel, event)
            finally:
                self._busy[channel] = False

    def _skip_after_failure(self, channel: str, event: ReportEvent) -> bool:
        """Events queued before a channel failed are dropped too (audited), all but the outcome.

        Otherwise each of them spends the whole report retry budget in turn, and a dead reporter
        holds its incident open for minutes after the remediation ended (measured: 5 queued
        events, about 5 minutes, bench/faults.py --integrations --dead-pagerduty).
        """
        if channel not in self._failed or event.kind == "outcome":
            return False
        if not workflow.patched("outbox-skip-after-failure-v1"):
            return False
        self._record(
            "report_failed",
            f"{channel}: {event.kind} ({event.event_id}) not sent: the channel failed earlier",
            {"channel": channel, "event": event.event_id, "skipped": True},
        )
        return True

    async def _send(self, channel: str, event: ReportEvent) -> None:
        """A failed report is audited, never raised: the incident goes on without that channel."""
        try:
            result: ReportResult = await workflow.execute_activity(
                report_activity(channel),
                event,
                result_type=ReportResult,
                start_to_close_timeout=REPORT_ATTEMPT_TIMEOUT,
                heartbeat_timeout=REPORT_HEARTBEAT,
                retry_policy=REPORT_RETRY,
            )
        except ActivityError as err:
            cause = err.cause if err.cause is not None else err
            why = str(cause.message if hasattr(cause, "message") else cause)[:300]
            first = channel not in self._failed
            self._failed[channel] = why
            self._record(
                "report_failed",
                f"{channel}: could not report {event.kind} ({event.event_id}): {why}",
                {"channel": channel, "event": event.event_id, "first_failure": first},
            )
            if first and self._on_failure is not None:
                self._on_failure(channel, why)
            return
        if not result.ok and not result.skipped:
            self._record(
                "report_failed",
                f"{channel}: {event.kind} not reported: {result.detail}",
                {"channel": channel, "event": event.event_id},
            )
