"""The Slack, Jira and PagerDuty side of the integration fault campaign (bench/faults.py --integrations).

Incidents report to all three sandboxes (`remedium/demo/sandbox/`, faithful to the real APIs)
through the product's own reporters and client libraries. While incidents run, each sandbox
is made, at seeded moments, to
- answer 5xx (500/502/503, 1-3 requests in a row),
- answer 5xx *after* the write took effect (the reply is lost on the way back: a retry must
  not post twice),
- answer 429 with Retry-After (1-3 s),
- hold requests past the reporters' 10 s client timeout (the write still lands, after the
  client gave up: again a retry must not post twice),
- refuse connections: stopped, then started again on the same port 2-5 s later, keeping its
  state (open keep-alive connections to the stopped server are closed unanswered).
Besides, a few incidents' PagerDuty incidents answer 503 to everything, for good: their
PagerDuty reports cannot be delivered and must end as `report_failed` audit entries while the
incident itself still ends right.

Afterwards each incident's audit trail and each sandbox's own record say, per reporter:
outcome delivered (the incident's `outcome` event is in the sandbox), failed with audit (a
`report_failed` entry names the channel), silently missing (neither: a report lost without a
trace, a bug), and delivered twice (the same event key posted twice, a second Slack thread, a
second Jira ticket or follow-up ticket for one label).
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from activities.jira import incident_label
from remedium.demo.sandbox.http_double import HttpDouble
from remedium.demo.sandbox.jira import JiraSandbox
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.models import AuditEntry

CHANNELS = ("slack", "jira", "pagerduty")
SLACK_CHANNEL = "C0INCIDENTS"
JIRA_PROJECT = "OPS"
PAGERDUTY_FROM = "remedium@example.com"
REPORT_PATHS = {  # what the reporters call (not startup probes)
    "slack": r"^/api/(chat\.|conversations\.)",
    "jira": r"^/rest/api/2/(issue|search)",
    "pagerduty": r"^/incidents/",
}
KINDS = ("5xx", "5xx-after-write", "429", "timeout", "refuse")
STALL_S = 12.0  # past the reporters' 10 s client timeout (activities/{slack,jira,pagerduty}.py)
MARKER = re.compile(r"\[remedium:([^\]\s]+)\]")


@dataclass
class SandboxFault:
    at_s: float
    sandbox: str
    kind: str
    detail: str = ""
    done_at_s: float | None = None


class ReportingSandboxes:
    """The three sandboxes, their worker settings, the fault plan and the final tally."""

    def __init__(self, rng: random.Random, per_kind: int, window_s: float) -> None:
        self.slack = SlackSandbox(channels={SLACK_CHANNEL: "incidents"})
        self.jira = JiraSandbox(project=JIRA_PROJECT)
        self.pagerduty = PagerDutySandbox(users=(PAGERDUTY_FROM,))
        self.doubles: dict[str, HttpDouble] = {
            "slack": self.slack,
            "jira": self.jira,
            "pagerduty": self.pagerduty,
        }
        self.rng = rng
        self.plan = sorted(
            (
                SandboxFault(round(rng.uniform(2.0, window_s), 1), name, kind)
                for name in CHANNELS
                for kind in KINDS
                for _ in range(per_kind)
            ),
            key=lambda f: (f.at_s, f.sandbox),
        )
        self.dead_pagerduty: set[str] = set()

    def start(self) -> None:
        for double in self.doubles.values():
            double.start()

    def stop(self) -> None:
        for double in self.doubles.values():
            double.stop()

    def env(self) -> dict[str, str]:
        """The worker settings pointing the product's reporters at the sandboxes."""
        return {
            "REMEDIUM_SLACK_TOKEN": self.slack.token,
            "REMEDIUM_SLACK_CHANNEL": SLACK_CHANNEL,
            "REMEDIUM_SLACK_API_URL": self.slack.api_url,
            "REMEDIUM_JIRA_URL": self.jira.url,
            "REMEDIUM_JIRA_USER": self.jira.user,
            "REMEDIUM_JIRA_TOKEN": self.jira.token,
            "REMEDIUM_JIRA_PROJECT": JIRA_PROJECT,
            "REMEDIUM_PAGERDUTY_TOKEN": self.pagerduty.token,
            "REMEDIUM_PAGERDUTY_FROM": PAGERDUTY_FROM,
            "REMEDIUM_PAGERDUTY_API_URL": self.pagerduty.url,
        }

    def open_incident(self, incident_id: str, title: str, dead: bool) -> None:
        """The PagerDuty incident the alert came from; a dead one answers 503 to everything."""
        self.pagerduty.add_incident(incident_id, title=title)
        if dead:
            self.dead_pagerduty.add(incident_id)
            self.pagerduty.fail_next(rf"^/incidents/{re.escape(incident_id)}(/|$)", 503, count=1_000_000)

    async def inject(self, t0: float, stop: asyncio.Event) -> None:
        """Run the plan: one task per sandbox, so an outage delays only that sandbox's next faults."""
        await asyncio.gather(*(self._inject_into(name, t0, stop) for name in CHANNELS))

    async def _inject_into(self, name: str, t0: float, stop: asyncio.Event) -> None:
        double, pattern = self.doubles[name], REPORT_PATHS[name]
        for fault in (f for f in self.plan if f.sandbox == name):
            wait = fault.at_s - (time.monotonic() - t0)
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except TimeoutError:
                    pass
            if stop.is_set():
                return
            fault.done_at_s = round(time.monotonic() - t0, 1)
            if fault.kind in ("5xx", "5xx-after-write"):
                status = self.rng.choice([500, 502, 503])
                count = 1 if fault.kind == "5xx-after-write" else self.rng.choice([1, 2, 3])
                double.fail_next(pattern, status, count=count, after_effect=fault.kind == "5xx-after-write")
                fault.detail = f"{status} x{count}"
            elif fault.kind == "429":
                retry_after, count = self.rng.choice([1, 2, 3]), self.rng.choice([1, 2])
                double.fail_next(pattern, 429, count=count, retry_after=retry_after)
                fault.detail = f"Retry-After {retry_after} x{count}"
            elif fault.kind == "timeout":
                count = self.rng.choice([1, 2])
                double.stall_next(pattern, STALL_S, count=count)
                fault.detail = f"held {STALL_S:.0f} s x{count}"
            else:  # refuse: the port closes, then the same server state comes back on it
                port = urlsplit(double.url).port
                assert port is not None
                down = round(self.rng.uniform(2.0, 5.0), 1)
                double.stop()
                await asyncio.sleep(down)
                double.start(port)
                fault.detail = f"refused {down} s"

    # ------------------------------------------------------------------ tally

    def tally(self, incidents: dict[str, str], audits: dict[str, list[AuditEntry] | None]) -> dict[str, Any]:
        """Per reporter: outcome delivered / failed with audit / silently missing / twice.

        `incidents` maps each workflow id to its PagerDuty incident id; `audits` holds each
        incident's audit trail (None: it could not be read).
        """
        out: dict[str, Any] = {}
        slack_found = self._slack_by_workflow()
        for channel in CHANNELS:
            row: dict[str, Any] = collections.Counter()
            failed_ids: list[str] = []
            failure_entries: list[dict[str, str]] = []
            missing_ids: list[str] = []
            twice: list[str] = []
            for workflow_id, pd_id in incidents.items():
                audit = audits.get(workflow_id)
                failures = [
                    e for e in audit or [] if e.kind == "report_failed" and e.data.get("channel") == channel
                ]
                if channel == "slack":
                    keys, dupes = slack_found.get(workflow_id, ([], 0))
                elif channel == "jira":
                    keys, dupes = self._jira_keys(workflow_id)
                else:
                    keys, dupes = self._pagerduty_keys(pd_id)
                outcome = any(k.startswith(workflow_id + "/") and k.endswith("-outcome") for k in keys)
                row["events_delivered"] += len(set(keys))
                row["report_failed_entries"] += len(failures)
                if outcome:
                    row["outcome_delivered"] += 1
                if failures:
                    row["failed_with_audit"] += 1
                    failed_ids.append(workflow_id)
                    failure_entries.extend(
                        {"incident": workflow_id, "at": e.at.isoformat(), "message": e.message[:300]}
                        for e in failures
                    )
                if audit is None:  # cannot tell an audited failure from a silent one
                    row["audit_unreadable"] += 1
                elif not outcome and not failures:
                    row["silently_missing"] += 1
                    missing_ids.append(workflow_id)
                if dupes:
                    row["delivered_twice"] += dupes
                    twice.append(workflow_id)
            statuses = collections.Counter(
                r.status for r in self.doubles[channel].received if r.status >= 400
            )
            out[channel] = {
                **{
                    k: row.get(k, 0)
                    for k in (
                        "outcome_delivered",
                        "failed_with_audit",
                        "silently_missing",
                        "delivered_twice",
                        "events_delivered",
                        "report_failed_entries",
                        "audit_unreadable",
                    )
                },
                "failed_with_audit_incidents": failed_ids,
                "report_failed_audit": failure_entries,
                "silently_missing_incidents": missing_ids,
                "delivered_twice_incidents": twice,
                "requests": len(self.doubles[channel].received),
                "error_replies_by_status": {str(k): v for k, v in sorted(statuses.items())},
            }
        out["pagerduty"]["dead_incidents"] = sorted(
            wf for wf, pd_id in incidents.items() if pd_id in self.dead_pagerduty
        )
        return out

    def _slack_by_workflow(self) -> dict[str, tuple[list[str], int]]:
        """Event keys per incident from the messages' metadata; a second thread parent counts as twice."""
        keys: dict[str, list[str]] = collections.defaultdict(list)
        parents: collections.Counter[str] = collections.Counter()
        with self.slack.lock:
            messages = list(self.slack.messages)
        for message in messages:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            workflow_id = payload.get("workflow_id")
            if not isinstance(workflow_id, str):
                continue
            if payload.get("role") == "thread":
                parents[workflow_id] += 1
            elif isinstance(payload.get("key"), str):
                keys[workflow_id].append(payload["key"])
        return {
            wf: (found, max(0, parents[wf] - 1) + _repeats(found))
            for wf, found in {**{w: [] for w in parents}, **keys}.items()
        }

    def _jira_keys(self, workflow_id: str) -> tuple[list[str], int]:
        """Markers in the incident ticket's comments; a second ticket for a label counts as twice."""
        label = incident_label(workflow_id)
        with self.jira.lock:
            tickets = {
                k: t for k, t in self.jira.tickets.items() if any(x.startswith(label) for x in t["labels"])
            }
            by_label = collections.Counter(
                x for t in tickets.values() for x in t["labels"] if x.startswith(label)
            )
            texts = [str(c["body"]) for t in tickets.values() if label in t["labels"] for c in t["comments"]]
        found = [m for text in texts for m in MARKER.findall(text)]
        return found, sum(n - 1 for n in by_label.values()) + _repeats(found)

    def _pagerduty_keys(self, incident_id: str) -> tuple[list[str], int]:
        found = [m for text in self.pagerduty.note_texts(incident_id) for m in MARKER.findall(text)]
        return found, _repeats(found)


def _repeats(keys: list[str]) -> int:
    return sum(n - 1 for n in collections.Counter(keys).values() if n > 1)


def reporter_line(tally: dict[str, Any]) -> str:
    """`slack 30 delivered/0 failed-with-audit/0 missing/0 twice; jira ...`"""
    return "; ".join(
        f"{channel} {t['outcome_delivered']} delivered/{t['failed_with_audit']} failed-with-audit/"
        f"{t['silently_missing']} missing/{t['delivered_twice']} twice"
        + (f" ({t['audit_unreadable']} audits unreadable)" if t["audit_unreadable"] else "")
        for channel, t in tally.items()
    )
