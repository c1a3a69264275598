"""A Jira REST API v2 stand-in for the calls the `jira` client makes on Remedium's behalf.

One project with a three-status workflow (To Do → In Progress → Done), issues with labels,
comments (plain-text v2 bodies), transitions and "Relates"-style links, answered in Jira's
shapes: `{"errorMessages": [...], "errors": {...}}` on failure, 401 without valid basic auth,
201 on create, 204 on transition. JQL is the subset the reporter needs: `project = X`,
`labels = "x"` (and `labels in (...)`), joined by AND, with an optional ORDER BY.
"""

from __future__ import annotations

import base64
import re
import shlex
from datetime import UTC, datetime
from typing import Any

from remedium.demo.sandbox.http_double import HttpDouble, Reply, Request, _seconds

API = "/rest/api/2"
STATUSES = {
    "1": {"id": "1", "name": "To Do", "statusCategory": {"id": 2, "key": "new", "name": "To Do"}},
    "3": {
        "id": "3",
        "name": "In Progress",
        "statusCategory": {"id": 4, "key": "indeterminate", "name": "In Progress"},
    },
    "10001": {"id": "10001", "name": "Done", "statusCategory": {"id": 3, "key": "done", "name": "Done"}},
}
TRANSITIONS = {"11": ("To Do", "1"), "21": ("In Progress", "3"), "31": ("Done", "10001")}
ISSUE_TYPES = [
    {"id": "10001", "name": "Task", "subtask": False},
    {"id": "10004", "name": "Bug", "subtask": False},
    {"id": "10010", "name": "Incident", "subtask": False},
    {"id": "10003", "name": "Sub-task", "subtask": True},
]
LINK_TYPES = [
    {"id": "10000", "name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
    {"id": "10001", "name": "Cloners", "inward": "is cloned by", "outward": "clones"},
    {"id": "10002", "name": "Duplicate", "inward": "is duplicated by", "outward": "duplicates"},
    {"id": "10003", "name": "Relates", "inward": "relates to", "outward": "relates to"},
]
FIELDS = [
    ("summary", "Summary", "string"),
    ("description", "Description", "string"),
    ("labels", "Labels", "array"),
    ("issuetype", "Issue Type", "issuetype"),
    ("project", "Project", "project"),
    ("status", "Status", "status"),
    ("comment", "Comment", "comments-page"),
    ("issuelinks", "Linked Issues", "array"),
    ("resolution", "Resolution", "resolution"),
    ("created", "Created", "datetime"),
    ("updated", "Updated", "datetime"),
]
_CLAUSE = re.compile(r"^\s*(\w+)\s*(=|in)\s*(.+?)\s*$", re.IGNORECASE)


class JqlError(ValueError):
    pass


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _errors(status: int, *messages: str, **fields: str) -> Reply:
    return Reply(status, {"errorMessages": list(messages), "errors": fields})


class JiraSandbox(HttpDouble):
    name = "jira"

    def __init__(
        self,
        user: str = "remedium@example.com",
        token: str = "jira-sandbox-token",
        project: str = "OPS",
        deployment: str = "Cloud",
    ) -> None:
        super().__init__()
        self.user, self.token, self.deployment = user, token, deployment
        self.projects = {project: {"id": "10000", "key": project, "name": f"{project} project"}}
        self.tickets: dict[str, dict[str, Any]] = {}  # key -> stored issue (our own shape)
        self.links: list[dict[str, Any]] = []
        self._seq = 0

    # ------------------------------------------------------------ accessors

    def comments(self, key: str) -> list[str]:
        with self.lock:
            return [c["body"] for c in self.tickets[key]["comments"]]

    def status(self, key: str) -> str:
        with self.lock:
            return str(STATUSES[self.tickets[key]["status"]]["name"])

    def find(self, label: str) -> list[str]:
        with self.lock:
            return [k for k, t in self.tickets.items() if label in t["labels"]]

    # -------------------------------------------------------------- serving

    def error_reply(self, status: int, retry_after: float | None) -> Reply:
        headers = {"Retry-After": _seconds(retry_after)} if retry_after is not None else {}
        message = "Rate limit exceeded." if status == 429 else f"Internal server error ({status})."
        return Reply(status, {"errorMessages": [message], "errors": {}}, headers)

    def _authenticated(self, request: Request) -> bool:
        auth = request.header("Authorization") or ""
        expected = base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        return auth == f"Basic {expected}"

    def handle(self, request: Request) -> Reply:
        if not self._authenticated(request):
            reply = _errors(401, "Client must be authenticated to access this resource.")
            reply.headers["WWW-Authenticate"] = 'Basic realm="protected-area"'
            return reply
        path, method = request.path.rstrip("/"), request.method
        if path == "/rest/auth/1/session" and method == "GET":
            return Reply(200, {"self": f"{self.url}{API}/myself", "name": self.user, "loginInfo": {}})
        if not path.startswith(API + "/"):
            return _errors(404, "Not found")
        route = path.removeprefix(API + "/").split("/")
        body = request.json if request.body else {}
        match route, method:
            case ["serverInfo"], "GET":
                return Reply(200, self._server_info())
            case ["field"], "GET":
                return Reply(200, self._fields())
            case ["myself"], "GET":
                return Reply(200, self._myself())
            case ["project", key], "GET":
                return self._project(key)
            case ["search"] | ["search", "jql"], "GET" | "POST":
                params = dict(request.query)
                if method == "POST" and isinstance(body, dict):
                    params.update({k: v for k, v in body.items() if isinstance(v, str | int)})
                return self._search(params, enhanced=route == ["search", "jql"])
            case ["issue"], "POST":
                return self._create(body)
            case ["issue", key], "GET":
                issue = self._issue(key)
                return Reply(200, self._render(issue)) if issue else self._no_issue()
            case ["issue", key, "comment"], "GET":
                return self._comments(key)
            case ["issue", key, "comment"], "POST":
                return self._add_comment(key, body)
            case ["issue", key, "transitions"], "GET":
                return self._transitions(key)
            case ["issue", key, "transitions"], "POST":
                return self._transition(key, body)
            case ["issueLinkType"], "GET":
                return Reply(200, {"issueLinkTypes": [self._link_type(t) for t in LINK_TYPES]})
            case ["issueLink"], "POST":
                return self._link(body)
        return _errors(404, "null for uri: " + request.path)

    # ------------------------------------------------------------- resources

    def _server_info(self) -> dict[str, Any]:
        return {
            "baseUrl": self.url,
            "version": "1001.0.0-SNAPSHOT" if self.deployment == "Cloud" else "9.12.2",
            "versionNumbers": [1001, 0, 0] if self.deployment == "Cloud" else [9, 12, 2],
            "deploymentType": self.deployment,
            "buildNumber": 100260,
            "buildDate": "2026-11-01T00:00:00.000+0000",
            "serverTime": _now(),
            "scmInfo": "0000000000000000000000000000000000000000",
            "serverTitle": "Remedium sandbox Jira",
        }

    def _fields(self) -> list[dict[str, Any]]:
        return [
            {
                "id": fid,
                "key": fid,
                "name": name,
                "custom": False,
                "orderable": True,
                "navigable": True,
                "searchable": True,
                "clauseNames": [fid],
                "schema": {"type": kind, "system": fid},
            }
            for fid, name, kind in FIELDS
        ]

    def _myself(self) -> dict[str, Any]:
        return {
            "self": f"{self.url}{API}/user?accountId=557058:remedium",
            "accountId": "557058:remedium",
            "accountType": "atlassian",
            "emailAddress": self.user,
            "displayName": "Remedium",
            "active": True,
            "timeZone": "UTC",
        }

    def _user(self) -> dict[str, Any]:
        return {"accountId": "557058:remedium", "displayName": "Remedium", "active": True}

    def _project_json(self, project: dict[str, Any]) -> dict[str, Any]:
        return {
            "self": f"{self.url}{API}/project/{project['id']}",
            **project,
            "projectTypeKey": "software",
            "issueTypes": [
                {"self": f"{self.url}{API}/issuetype/{t['id']}", **t, "description": ""} for t in ISSUE_TYPES
            ],
        }

    def _project(self, key: str) -> Reply:
        project = self._find_project(key)
        if project is None:
            return _errors(404, f"No project could be found with key '{key}'.")
        return Reply(200, self._project_json(project))

    def _find_project(self, ref: str) -> dict[str, Any] | None:
        return next((p for p in self.projects.values() if ref in (p["key"], p["id"])), None)

    def _link_type(self, t: dict[str, str]) -> dict[str, str]:
        return {**t, "self": f"{self.url}{API}/issueLinkType/{t['id']}"}

    def _issue(self, ref: str) -> dict[str, Any] | None:
        return next((t for t in self.tickets.values() if ref in (t["key"], t["id"])), None)

    @staticmethod
    def _no_issue() -> Reply:
        return _errors(404, "Issue does not exist or you do not have permission to see it.")

    def _ref(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": issue["id"],
            "key": issue["key"],
            "self": f"{self.url}{API}/issue/{issue['id']}",
            "fields": {
                "summary": issue["summary"],
                "status": STATUSES[issue["status"]],
                "issuetype": issue["issuetype"],
            },
        }

    def _comment_json(self, issue: dict[str, Any], comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "self": f"{self.url}{API}/issue/{issue['id']}/comment/{comment['id']}",
            "id": comment["id"],
            "author": self._user(),
            "body": comment["body"],
            "updateAuthor": self._user(),
            "created": comment["created"],
            "updated": comment["created"],
            "jsdPublic": True,
        }

    def _render(self, issue: dict[str, Any]) -> dict[str, Any]:
        links = []
        for link in self.links:
            if link["inward"] == issue["key"]:
                other = self._issue(link["outward"])
                if other is not None:
                    links.append({"id": link["id"], "type": link["type"], "outwardIssue": self._ref(other)})
            elif link["outward"] == issue["key"]:
                other = self._issue(link["inward"])
                if other is not None:
                    links.append({"id": link["id"], "type": link["type"], "inwardIssue": self._ref(other)})
        comments = [self._comment_json(issue, c) for c in issue["comments"]]
        project = self.projects[issue["project"]]
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue["id"],
            "self": f"{self.url}{API}/issue/{issue['id']}",
            "key": issue["key"],
            "fields": {
                "summary": issue["summary"],
                "description": issue["description"],
                "labels": list(issue["labels"]),
                "issuetype": issue["issuetype"],
                "project": {"id": project["id"], "key": project["key"], "name": project["name"]},
                "status": STATUSES[issue["status"]],
                "resolution": {"id": "10000", "name": "Done"} if issue["status"] == "10001" else None,
                "created": issue["created"],
                "updated": issue["updated"],
                "issuelinks": links,
                "comment": {
                    "comments": comments,
                    "maxResults": len(comments),
                    "total": len(comments),
                    "startAt": 0,
                },
            },
        }

    # -------------------------------------------------------------- search

    def _matcher(self, jql: str) -> list[tuple[str, list[str]]]:
        text = re.split(r"\border\s+by\b", jql, flags=re.IGNORECASE)[0]
        clauses = []
        for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
            if not part.strip():
                continue
            m = _CLAUSE.match(part)
            if m is None:
                raise JqlError(f"Error in the JQL Query: unsupported clause '{part.strip()}'.")
            fname, op, raw = m[1].lower(), m[2].lower(), m[3]
            if fname not in ("project", "labels", "key"):
                raise JqlError(f"Field '{m[1]}' does not exist or you do not have permission to view it.")
            if op == "in":
                if not (raw.startswith("(") and raw.endswith(")")):
                    raise JqlError(f"Error in the JQL Query: expected '(' after 'in' in '{part.strip()}'.")
                values = [v.strip() for v in shlex.split(raw[1:-1].replace(",", " "))]
            else:
                values = shlex.split(raw)
                if len(values) != 1:
                    raise JqlError(f"Error in the JQL Query: cannot parse '{part.strip()}'.")
            if fname == "project" and not any(self._find_project(v) for v in values):
                raise JqlError(f"The value '{values[0]}' does not exist for the field 'project'.")
            clauses.append((fname, values))
        return clauses

    def _matches(self, issue: dict[str, Any], clauses: list[tuple[str, list[str]]]) -> bool:
        for fname, values in clauses:
            if fname == "project":
                project = self.projects[issue["project"]]
                if not {project["key"], project["id"]} & set(values):
                    return False
            elif fname == "labels" and not set(issue["labels"]) & set(values):
                return False
            elif fname == "key" and issue["key"] not in values:
                return False
        return True

    def _search(self, params: dict[str, Any], enhanced: bool) -> Reply:
        jql = str(params.get("jql") or "")
        try:
            clauses = self._matcher(jql)
        except JqlError as exc:
            return _errors(400, str(exc))
        found = [self._render(t) for t in self.tickets.values() if self._matches(t, clauses)]
        found.sort(key=lambda i: -int(i["id"]))  # newest first, Jira's default ORDER BY created DESC
        try:
            size = int(params.get("maxResults") or 50)
            start = int(params.get("startAt") or params.get("nextPageToken") or 0)
        except ValueError:
            return _errors(400, "Invalid paging parameters.")
        page = found[start : start + size]
        if enhanced:
            payload: dict[str, Any] = {"issues": page, "isLast": start + size >= len(found)}
            if not payload["isLast"]:
                payload["nextPageToken"] = str(start + size)
            return Reply(200, payload)
        return Reply(
            200,
            {
                "expand": "schema,names",
                "startAt": start,
                "maxResults": size,
                "total": len(found),
                "issues": page,
            },
        )

    # -------------------------------------------------------------- writes

    def _create(self, body: Any) -> Reply:
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return _errors(400, "Can not deserialize the request: no 'fields'.")
        problems: dict[str, str] = {}
        project_ref = fields.get("project") or {}
        project = self._find_project(str(project_ref.get("key") or project_ref.get("id") or ""))
        if project is None:
            problems["project"] = "Specify a valid project ID or key"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            problems["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255:
            problems["summary"] = "Summary must be less than 255 characters."
        type_ref = fields.get("issuetype") or {}
        issuetype = next(
            (t for t in ISSUE_TYPES if type_ref.get("name") == t["name"] or type_ref.get("id") == t["id"]),
            None,
        )
        if issuetype is None:
            problems["issuetype"] = "Specify an issue type"
        labels = fields.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            problems["labels"] = "Labels must be a list of strings."
        elif bad := [x for x in labels if not x or " " in x or len(x) > 255]:
            problems["labels"] = f"The label '{bad[0]}' contains spaces which is invalid."
        unknown = set(fields) - {"project", "summary", "description", "issuetype", "labels"}
        for name in sorted(unknown):
            problems[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
        if problems or project is None or issuetype is None:
            return _errors(400, **problems)
        self._seq += 1
        issue_id = str(10000 + self._seq)
        key = f"{project['key']}-{self._seq}"
        now = _now()
        self.tickets[key] = {
            "id": issue_id,
            "key": key,
            "project": project["key"],
            "summary": summary,
            "description": fields.get("description"),
            "labels": list(labels),
            "issuetype": {"self": f"{self.url}{API}/issuetype/{issuetype['id']}", **issuetype},
            "status": "1",
            "comments": [],
            "created": now,
            "updated": now,
        }
        return Reply(201, {"id": issue_id, "key": key, "self": f"{self.url}{API}/issue/{issue_id}"})

    def _comments(self, key: str) -> Reply:
        issue = self._issue(key)
        if issue is None:
            return self._no_issue()
        comments = [self._comment_json(issue, c) for c in issue["comments"]]
        return Reply(200, {"startAt": 0, "maxResults": 5000, "total": len(comments), "comments": comments})

    def _append_comment(self, issue: dict[str, Any], text: str) -> dict[str, Any]:
        comment = {"id": str(20000 + sum(len(t["comments"]) for t in self.tickets.values())), "body": text}
        comment["created"] = issue["updated"] = _now()
        issue["comments"].append(comment)
        return comment

    def _add_comment(self, key: str, body: Any) -> Reply:
        issue = self._issue(key)
        if issue is None:
            return self._no_issue()
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _errors(400, comment="Comment body can not be empty!")
        if len(text) > 32767:
            return _errors(
                400, comment="The entered text is too long. It exceeds the allowed limit of 32767 characters."
            )
        return Reply(201, self._comment_json(issue, self._append_comment(issue, text)))

    def _transitions(self, key: str) -> Reply:
        issue = self._issue(key)
        if issue is None:
            return self._no_issue()
        available = [
            {
                "id": tid,
                "name": name,
                "to": {"self": f"{self.url}{API}/status/{status}", **STATUSES[status]},
                "hasScreen": False,
                "isGlobal": True,
                "isInitial": False,
                "isAvailable": True,
                "isConditional": False,
                "isLooped": False,
            }
            for tid, (name, status) in TRANSITIONS.items()
            if status != issue["status"]
        ]
        return Reply(200, {"expand": "transitions", "transitions": available})

    def _transition(self, key: str, body: Any) -> Reply:
        issue = self._issue(key)
        if issue is None:
            return self._no_issue()
        transition = body.get("transition") if isinstance(body, dict) else None
        if not isinstance(transition, dict) or "id" not in transition:
            return _errors(400, "Missing 'transition' identifier")
        tid = str(transition["id"])  # the client sends a string or, given an id, an int
        if tid not in TRANSITIONS or TRANSITIONS[tid][1] == issue["status"]:
            return _errors(400, f"Transition id '{tid}' is not valid for this issue.")
        for change in (body.get("update") or {}).get("comment") or []:
            added = change.get("add") or {}
            if isinstance(added.get("body"), str):
                self._append_comment(issue, added["body"])
        issue["status"] = TRANSITIONS[tid][1]
        issue["updated"] = _now()
        return Reply(204)

    def _link(self, body: Any) -> Reply:
        if not isinstance(body, dict):
            return _errors(400, "Can not deserialize the request.")
        type_ref = body.get("type") or {}
        link_type = next(
            (t for t in LINK_TYPES if type_ref.get("name") == t["name"] or type_ref.get("id") == t["id"]),
            None,
        )
        if link_type is None:
            return _errors(404, f"No issue link type with name '{type_ref.get('name')}' found.")
        refs = [body.get("inwardIssue") or {}, body.get("outwardIssue") or {}]
        issues = [self._issue(str(r.get("key") or r.get("id") or "")) for r in refs]
        if issues[0] is None or issues[1] is None:
            return _errors(404, "Issue Does Not Exist")
        self.links.append(
            {
                "id": str(30000 + len(self.links)),
                "type": self._link_type(link_type),
                "inward": issues[0]["key"],
                "outward": issues[1]["key"],
            }
        )
        return Reply(201)
