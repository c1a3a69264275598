"""A PagerDuty REST API v2 stand-in for incidents and their notes, as Remedium's reporter uses them.

It insists on what the real API insists on: `Authorization: Token token=<key>` (401 otherwise),
the version-2 `Accept` header, and a `From` header naming a known user on writes (400
otherwise). Errors come back in PagerDuty's `{"error": {"message", "code", "errors"}}` shape.
Incidents carry an escalation policy with a few levels, so escalating past the last is refused.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from remedium.demo.sandbox.http_double import HttpDouble, Reply, Request, _seconds

ACCEPT = "application/vnd.pagerduty+json;version=2"
ESCALATION_LEVELS = 3
LOG_ENTRY_TYPES = {
    "triggered": "trigger_log_entry",
    "acknowledged": "acknowledge_log_entry",
    "resolved": "resolve_log_entry",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, code: int, *errors: str) -> Reply:
    return Reply(status, {"error": {"message": message, "code": code, "errors": list(errors)}})


class PagerDutySandbox(HttpDouble):
    name = "pagerduty"

    def __init__(
        self, token: str = "pd-sandbox-token", users: tuple[str, ...] = ("remedium@example.com",)
    ) -> None:
        super().__init__()
        self.token = token
        self.users = {email: f"PUSER{i:02d}" for i, email in enumerate(users, start=1)}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, list[dict[str, Any]]] = {}
        self.log: list[dict[str, Any]] = []  # status changes and escalations, as log entries
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ accessors

    def add_incident(
        self, incident_id: str, title: str = "Sandbox incident", status: str = "triggered"
    ) -> dict[str, Any]:
        """Open an incident (as a trigger would) so the reporter has something to act on."""
        with self.lock:
            number = len(self.incidents) + 1
            self.incidents[incident_id] = {
                "id": incident_id,
                "type": "incident",
                "summary": f"[#{number}] {title}",
                "self": f"{self._base()}/incidents/{incident_id}",
                "html_url": f"https://sandbox.pagerduty.com/incidents/{incident_id}",
                "incident_number": number,
                "title": title,
                "created_at": _now(),
                "updated_at": _now(),
                "status": status,
                "incident_key": f"remedium-sandbox-{incident_id}",
                "service": {"id": "PSERVIC", "type": "service_reference", "summary": "Sandbox service"},
                "assignments": [],
                "assigned_via": "escalation_policy",
                "last_status_change_at": _now(),
                "escalation_policy": {
                    "id": "PESCPOL",
                    "type": "escalation_policy_reference",
                    "summary": "Default",
                },
                "teams": [],
                "urgency": "high",
                "escalation_level": 1,  # kept for inspection; the real GET does not return it
            }
            self.notes[incident_id] = []
            return self.incidents[incident_id]

    def note_texts(self, incident_id: str) -> list[str]:
        with self.lock:
            return [n["content"] for n in self.notes.get(incident_id, [])]

    # -------------------------------------------------------------- serving

    def _base(self) -> str:
        return self.url if self._server is not None else "https://api.pagerduty.com"

    def error_reply(self, status: int, retry_after: float | None) -> Reply:
        headers = {"Retry-After": _seconds(retry_after)} if retry_after is not None else {}
        if status == 429:
            reply = _error(429, "Rate Limit Exceeded", 2020)
        else:
            reply = _error(status, "Internal Server Error", 2000 + status)
        reply.headers.update(headers)
        return reply

    def handle(self, request: Request) -> Reply:
        if request.header("Authorization") != f"Token token={self.token}":
            return _error(401, "Authentication failed", 2006)
        if (request.header("Accept") or "") != ACCEPT:
            return _error(400, "Invalid Input Provided", 2001, "Accept header must request version=2")
        route = request.path.strip("/").split("/")
        match route, request.method:
            case ["incidents", incident_id], "GET":
                incident = self.incidents.get(incident_id)
                return Reply(200, {"incident": self._public(incident)}) if incident else self._not_found()
            case ["incidents", incident_id], "PUT":
                return self._write(request, lambda user: self._update(incident_id, request.json, user))
            case ["incidents", incident_id, "notes"], "GET":
                if incident_id not in self.incidents:
                    return self._not_found()
                return Reply(200, {"notes": list(self.notes[incident_id])})
            case ["incidents", incident_id, "notes"], "POST":
                return self._write(request, lambda user: self._add_note(incident_id, request.json, user))
        return self._not_found()

    @staticmethod
    def _not_found() -> Reply:
        return _error(404, "Not Found", 2100)

    @staticmethod
    def _public(incident: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in incident.items() if k != "escalation_level"}

    def _user_ref(self, user_id: str, email: str) -> dict[str, Any]:
        return {
            "id": user_id,
            "type": "user_reference",
            "summary": email,
            "self": f"{self._base()}/users/{user_id}",
            "html_url": f"https://sandbox.pagerduty.com/users/{user_id}",
        }

    def _write(self, request: Request, apply: Any) -> Reply:
        sender = request.header("From")
        if not sender:
            return _error(
                400, "Invalid Input Provided", 2001, "A valid 'From' header is required for this request."
            )
        if sender not in self.users:
            return _error(400, "Invalid Input Provided", 2001, "Requester User Not Found")
        try:
            return apply(self._user_ref(self.users[sender], sender))  # type: ignore[no-any-return]
        except (AttributeError, TypeError, ValueError):
            return _error(400, "Invalid Input Provided", 2001, "The request body is not valid JSON")

    def _add_note(self, incident_id: str, body: Any, user: dict[str, Any]) -> Reply:
        if incident_id not in self.incidents:
            return self._not_found()
        content = (body or {}).get("note", {}).get("content")
        if not isinstance(content, str) or not content.strip():
            return _error(400, "Invalid Input Provided", 2001, "Note content can't be blank")
        if len(content) > 25000:
            return _error(
                400, "Invalid Input Provided", 2001, "Note content is too long (maximum is 25000 characters)"
            )
        note = {
            "id": f"PNOTE{next(self._ids):02d}",
            "user": user,
            "channel": {"summary": "The PagerDuty website or APIs"},
            "content": content,
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.notes[incident_id].append(note)
        return Reply(200, {"note": note})

    def _update(self, incident_id: str, body: Any, user: dict[str, Any]) -> Reply:
        incident = self.incidents.get(incident_id)
        if incident is None:
            return self._not_found()
        change = (body or {}).get("incident")
        if not isinstance(change, dict) or change.get("type") not in ("incident", "incident_reference"):
            return _error(400, "Invalid Input Provided", 2001, "Incident type must be 'incident_reference'")
        status = change.get("status")
        if status is not None and status not in ("triggered", "acknowledged", "resolved"):
            return _error(400, "Invalid Input Provided", 2001, f"Status '{status}' is not valid")
        handover = [k for k in ("escalation_level", "assignments", "escalation_policy") if k in change]
        if len(handover) > 1:
            return _error(
                400, "Invalid Input Provided", 2001, f"Only one of {', '.join(handover)} may be given"
            )
        if handover and incident["status"] == "resolved" and status is None:
            return _error(400, "Invalid Input Provided", 2001, "Incident Already Resolved")
        level = change.get("escalation_level")
        if level is not None:
            if not isinstance(level, int) or not 1 <= level <= ESCALATION_LEVELS:
                return _error(400, "Invalid Input Provided", 2001, "Escalation level is not valid")
            incident["escalation_level"] = level
            self.log.append(
                {"type": "escalate_log_entry", "incident": incident_id, "level": level, "agent": user}
            )
        if "assignments" in change:
            assignees = _references(change["assignments"], "assignee", "user_reference")
            if not assignees:
                return _error(400, "Invalid Input Provided", 2001, "Assignments are not valid")
            incident["assignments"] = [
                {
                    "at": _now(),
                    "assignee": {**ref, "summary": ref["id"], "self": f"{self._base()}/users/{ref['id']}"},
                }
                for ref in assignees
            ]
            incident["assigned_via"] = "direct_assignment"
            self.log.append(
                {
                    "type": "assign_log_entry",
                    "incident": incident_id,
                    "assignees": [r["id"] for r in assignees],
                    "agent": user,
                }
            )
        if "escalation_policy" in change:
            policies = _references([{"p": change["escalation_policy"]}], "p", "escalation_policy_reference")
            if not policies:
                return _error(400, "Invalid Input Provided", 2001, "Escalation policy is not valid")
            policy = policies[0]
            incident["escalation_policy"] = {**policy, "summary": policy["id"]}
            incident["assignments"] = []
            incident["assigned_via"] = "escalation_policy"
            incident["escalation_level"] = 1
            self.log.append(
                {
                    "type": "assign_log_entry",
                    "incident": incident_id,
                    "escalation_policy": policy["id"],
                    "agent": user,
                }
            )
        if status is not None and status != incident["status"]:
            incident["status"] = status
            incident["last_status_change_at"] = _now()
            if status == "resolved":  # the spec's `resolved_at` is a date-time, absent until resolved
                incident["resolved_at"] = _now()
            else:
                incident.pop("resolved_at", None)
            self.log.append(
                {
                    "type": LOG_ENTRY_TYPES[status],
                    "incident": incident_id,
                    "agent": user,
                    "resolution": change.get("resolution"),
                }
            )
        incident["updated_at"] = _now()
        return Reply(200, {"incident": self._public(incident)})


def _references(items: Any, key: str, kind: str) -> list[dict[str, str]]:
    """`[{key: {"id": ..., "type": kind}}, ...]` -> the references, or [] when any is malformed."""
    if not isinstance(items, list):
        return []
    refs = [item.get(key) if isinstance(item, dict) else None for item in items]
    if not all(isinstance(r, dict) and isinstance(r.get("id"), str) and r.get("type") == kind for r in refs):
        return []
    return [{"id": r["id"], "type": kind} for r in refs if isinstance(r, dict)]
