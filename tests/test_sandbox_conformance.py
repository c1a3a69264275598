"""The messaging sandboxes answer in the shapes the upstream API specs define.

Each reply the sandbox gives our clients is validated against the response schema of the
same operation in `../shared/reference/` (PagerDuty REST OpenAPI 3, Slack Web API
OpenAPI 2, Jira Cloud platform OpenAPI 3): a field the real API does not have, a missing
required one or a wrong type fails here, before a production endpoint would surprise us.
Jira's spec is v3; only operations whose v2 and v3 shapes agree (no rich-text bodies) are
checked against it.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft4Validator

from remedium.demo.sandbox.jira import JiraSandbox
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.demo.sandbox.slack import SlackSandbox
from tests.plugins.messaging import PD_INCIDENT

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _openapi_nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` in JSON Schema draft 4 terms (a `null` alternative)."""
    if isinstance(node, list):
        return [_openapi_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _openapi_nullable(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str) and "$ref" not in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [{"type": "null"}, out]}
    return out


# Where a spec contradicts the API it describes (and the client libraries), the API wins; each
# such place is named here with its fix, so the rest of the spec stays authoritative.
ERRATA: dict[str, list[tuple[tuple[str, ...], Any, str]]] = {
    "slack/slack_web_openapi_v2.json": [
        (
            (
                "paths",
                "/chat.update",
                "post",
                "responses",
                "200",
                "schema",
                "properties",
                "message",
                "properties",
                "blocks",
            ),
            {"type": "array", "items": {"type": "object"}},
            "Block Kit blocks are an array everywhere else in the spec and in the API",
        )
    ],
}


@functools.cache
def _spec(name: str) -> dict[str, Any]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the upstream specs live in ../shared/reference beside the checkout")
    spec: dict[str, Any] = _openapi_nullable(json.loads(path.read_text()))
    for where, fixed, _why in ERRATA.get(name, []):
        node = spec
        for key in where[:-1]:
            node = node[key]
        assert where[-1] in node, f"erratum for {name} no longer applies at {where}"
        node[where[-1]] = fixed
    return spec


def _validator(spec_name: str, *path: str) -> Draft4Validator:
    """The schema at `path` inside the spec, with its refs resolving in the whole spec."""
    pointer = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)
    return Draft4Validator({**_spec(spec_name), "$ref": pointer})


def assert_matches(spec_name: str, reply: httpx.Response, *path: str) -> None:
    """Validate a reply's JSON against the schema at `path` inside the spec."""
    validator = _validator(spec_name, *path)
    errors = sorted(validator.iter_errors(reply.json()), key=lambda e: list(e.absolute_path))
    assert not errors, (
        f"{reply.request.method} {reply.request.url.path} ({reply.status_code}):\n"
        + "\n".join(
            f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors[:10]
        )
    )


# ------------------------------------------------------------------ PagerDuty REST v2

PD_SPEC = "pagerduty/rest_openapiv3.json"


def _pd_schema(path: str, method: str, status: str) -> tuple[str, ...]:
    return ("paths", path, method, "responses", status, "content", "application/json", "schema")


def test_pagerduty_sandbox_replies_match_the_rest_openapi_spec(pagerduty_sandbox: PagerDutySandbox) -> None:
    headers = {
        "Authorization": f"Token token={pagerduty_sandbox.token}",
        "Accept": "application/vnd.pagerduty+json;version=2",
        "From": "remedium@example.com",
    }
    incident = f"/incidents/{PD_INCIDENT}"
    with httpx.Client(base_url=pagerduty_sandbox.url, headers=headers, timeout=10) as http:
        replies = [
            (http.get(incident), _pd_schema("/incidents/{id}", "get", "200")),
            (
                http.post(
                    f"{incident}/notes", json={"note": {"content": "Remedium: restarted payments/api"}}
                ),
                _pd_schema("/incidents/{id}/notes", "post", "200"),
            ),
            (http.get(f"{incident}/notes"), _pd_schema("/incidents/{id}/notes", "get", "200")),
            (
                http.put(incident, json={"incident": {"type": "incident_reference", "escalation_level": 2}}),
                _pd_schema("/incidents/{id}", "put", "200"),
            ),
            (
                http.put(
                    incident,
                    json={
                        "incident": {
                            "type": "incident_reference",
                            "assignments": [{"assignee": {"id": "PSRELD1", "type": "user_reference"}}],
                        }
                    },
                ),
                _pd_schema("/incidents/{id}", "put", "200"),
            ),
            (
                http.put(incident, json={"incident": {"type": "incident_reference", "status": "resolved"}}),
                _pd_schema("/incidents/{id}", "put", "200"),
            ),
            (http.get("/incidents/PNOSUCH"), _pd_schema("/incidents/{id}", "get", "404")),
        ]
    assert [r.status_code for r, _ in replies] == [200, 200, 200, 200, 200, 200, 404]
    assert replies[-2][0].json()["incident"]["status"] == "resolved"
    for reply, schema in replies:
        if reply.status_code == 404:  # the spec's NotFound points at the shared error schema
            assert_matches(
                PD_SPEC, reply, "components", "responses", "Conflict", "content", "application/json", "schema"
            )
        else:
            assert_matches(PD_SPEC, reply, *schema)


# ------------------------------------------------------------------ Slack Web API

SLACK_SPEC = "slack/slack_web_openapi_v2.json"


def test_slack_sandbox_replies_match_the_web_api_spec(slack_sandbox: SlackSandbox) -> None:
    """auth.test, chat.postMessage (top level and in a thread), chat.update and an error reply.

    conversations.history/replies are left out: the spec's schemas for them reject the spec's
    own examples (no `response_metadata`, required `channel_actions_*`); the next test holds
    them to those examples instead.
    """
    auth = {"Authorization": f"Bearer {slack_sandbox.token}"}
    channel = next(iter(slack_sandbox.channels))
    with httpx.Client(base_url=slack_sandbox.api_url, headers=auth, timeout=10) as http:
        posted = http.post(
            "chat.postMessage",
            json={
                "channel": channel,
                "text": "Incident: payments/api crash looping",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*payments/api*"}}],
            },
        )
        ts = posted.json()["ts"]
        reply = http.post("chat.postMessage", json={"channel": channel, "thread_ts": ts, "text": "Diagnosis"})
        replies = [
            (http.post("auth.test"), "/auth.test", "get", "200"),
            (posted, "/chat.postMessage", "post", "200"),
            (reply, "/chat.postMessage", "post", "200"),
            (
                http.post("chat.update", json={"channel": channel, "ts": ts, "text": "Resolved"}),
                "/chat.update",
                "post",
                "200",
            ),
            (
                http.post("chat.postMessage", json={"channel": "CNOSUCH", "text": "x"}),
                "/chat.postMessage",
                "post",
                "default",
            ),
        ]
    assert [r.json()["ok"] for r, *_ in replies] == [True] * 4 + [False]
    for response, path, method, status in replies:
        assert_matches(SLACK_SPEC, response, "paths", path, method, "responses", status, "schema")


# ------------------------------------------------------------------ Jira REST

JIRA_SPEC = "jira/jira_cloud_v3_schema.json"


def _jira_schema(path: str, method: str, status: str) -> tuple[str, ...]:
    return (
        "paths",
        f"/rest/api/3{path}",
        method,
        "responses",
        status,
        "content",
        "application/json",
        "schema",
    )


def test_jira_sandbox_replies_match_the_platform_spec(jira_sandbox: JiraSandbox) -> None:
    basic = base64.b64encode(f"{jira_sandbox.user}:{jira_sandbox.token}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
    project = next(iter(jira_sandbox.projects))
    with httpx.Client(base_url=f"{jira_sandbox.url}/rest/api/2", headers=headers, timeout=10) as http:
        created = http.post(
            "/issue",
            json={
                "fields": {
                    "project": {"key": project},
                    "summary": "[Remedium] payments/api crash looping",
                    "description": "Opened by Remedium.",
                    "issuetype": {"name": "Task"},
                    "labels": ["remedium"],
                }
            },
        )
        key = created.json()["key"]
        replies = [
            (http.get("/serverInfo"), _jira_schema("/serverInfo", "get", "200")),
            (http.get("/myself"), _jira_schema("/myself", "get", "200")),
            (http.get(f"/project/{project}"), _jira_schema("/project/{projectIdOrKey}", "get", "200")),
            (http.get("/field"), _jira_schema("/field", "get", "200")),
            (created, _jira_schema("/issue", "post", "201")),
            (
                http.get(f"/issue/{key}/transitions"),
                _jira_schema("/issue/{issueIdOrKey}/transitions", "get", "200"),
            ),
            (http.get("/issueLinkType"), _jira_schema("/issueLinkType", "get", "200")),
            (
                http.get("/search", params={"jql": 'labels = "remedium"', "fields": "summary,status"}),
                _jira_schema("/search", "get", "200"),
            ),
            (
                http.get(f"/issue/{key}", params={"fields": "summary,status"}),
                _jira_schema("/issue/{issueIdOrKey}", "get", "200"),
            ),
        ]
    assert [r.status_code for r, _ in replies] == [200, 200, 200, 200, 201, 200, 200, 200, 200]
    assert [i["key"] for i in replies[-2][0].json()["issues"]] == [key]
    for reply, schema in replies:
        assert_matches(JIRA_SPEC, reply, *schema)


def test_history_and_replies_follow_the_spec_examples_since_its_schemas_reject_them(
    slack_sandbox: SlackSandbox,
) -> None:
    """The spec's schemas for these two reject the spec's own examples, so the examples rule."""
    paths = _spec(SLACK_SPEC)["paths"]
    examples = {
        name: paths[f"/{name}"]["get"]["responses"]["200"]["examples"]["application/json"]
        for name in ("conversations.history", "conversations.replies")
    }
    history = _validator(SLACK_SPEC, "paths", "/conversations.history", "get", "responses", "200", "schema")
    assert not history.is_valid(examples["conversations.history"])

    channel = next(iter(slack_sandbox.channels))
    auth = {"Authorization": f"Bearer {slack_sandbox.token}"}
    with httpx.Client(base_url=slack_sandbox.api_url, headers=auth, timeout=10) as http:
        ts = http.post("chat.postMessage", json={"channel": channel, "text": "Incident"}).json()["ts"]
        http.post("chat.postMessage", json={"channel": channel, "thread_ts": ts, "text": "Diagnosis"})
        replies = {
            "conversations.history": http.get("conversations.history", params={"channel": channel}).json(),
            "conversations.replies": http.get(
                "conversations.replies", params={"channel": channel, "ts": ts}
            ).json(),
        }
    for name, reply in replies.items():
        assert set(reply) == set(examples[name]), name
        core = set.intersection(*(set(m) for m in examples[name]["messages"]))
        assert all(core <= set(m) for m in reply["messages"]), (name, core, reply["messages"])
    assert [m["thread_ts"] for m in replies["conversations.replies"]["messages"]] == [ts, ts]
