"""Outbound HTTP goes only where the policy's `http.allow` says, and bodies shown are redacted.

The finding: the shipped `web-health-restart` runbook takes `base_url` from an alert
annotation, so an alert pointing it at `http://127.0.0.1:29000/internal/admin-console?x=`
made the worker GET an internal endpoint without approval, post its body (with a token) to
Slack, and POST to it after approval. Here a real worker on real Temporal meets that alert
with a second loopback server standing in for the internal endpoint: it must see nothing.
The matcher's prefix tricks and DNS-to-loopback cases are unit tests of remedium.guards, and
the activities' own refusals (defence in depth) run against real loopback servers.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.http import (
    HttpProbe,
    HttpProbeParams,
    HttpRequest,
    HttpRequestParams,
    HttpSettings,
    OutboundGuard,
    http_client,
    resolve_host,
)
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.errors import ErrorType
from remedium.guards import blast_radius_refusal, outbound_refusal
from remedium.models import ActionRequest, Alert, AuditEntry, DryRun, IncidentResult, Policy, RenderedStep
from remedium.models.policy import HttpPolicy
from remedium.settings import Settings
from remedium.summary import fact_brief, redact
from tests.support import TargetService, restart_runbook, start, worker_for, write_config

REPO = Path(__file__).resolve().parents[1]
CHANNEL = "C0INCIDENTS"
INTERNAL_TOKEN = "internaladmintoken7f3a"


@dataclass
class Seen:
    method: str
    path: str


@dataclass
class JsonService:
    """A loopback server answering every request with `status` and `body`, logging each one."""

    status: int = 200
    body: Any = field(default_factory=dict)
    redirect_to: str | None = None
    requests: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> JsonService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                service.requests.append(Seen(self.command, self.path))
                if service.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", service.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(service.body).encode()
                self.send_response(service.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def internal() -> Iterator[JsonService]:
    """The internal admin console an alert must never reach: it hands out a token to anyone."""
    service = JsonService(body={"console": "admin", "token": INTERNAL_TOKEN}).start()
    yield service
    service.stop()


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService(health_status=500, health_after_restart=200).start()
    yield service
    service.stop()


def _settings(rb_dir: Path, policy: Path, slack: SlackSandbox) -> Settings:
    return Settings(
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        slack_token=SecretStr(slack.token),
        slack_channel=CHANNEL,
        slack_api_url=slack.api_url,
    )


def _slack_received(slack: SlackSandbox) -> bytes:
    with slack.lock:
        return b"\n".join(r.body for r in slack.received)


def _kinds(audit: list[AuditEntry]) -> list[str]:
    return [e.kind for e in audit]


async def _run(
    env: WorkflowEnvironment, settings: Settings, alert: Alert
) -> tuple[IncidentResult, list[AuditEntry]]:
    async with worker_for(env.client, settings):
        handle = await start(env.client, settings, alert)
        result: IncidentResult = await handle.result()
        audit = await handle.query("audit", result_type=list[AuditEntry])
    return result, audit


# ------------------------------------------------------------------ the finding, end to end


async def test_ssrf_alert_reaches_no_internal_endpoint_and_nothing_reaches_slack(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    internal: JsonService,
    slack_sandbox: SlackSandbox,
) -> None:
    """The shipped runbook, an alert aiming base_url at an internal server the policy does not allow."""
    rb_dir, policy = write_config(tmp_path, [], allow=[target.url])
    shutil.copy(REPO / "runbooks" / "web-health-restart.yaml", rb_dir)
    base_url = f"{internal.url}/internal/admin-console?x="
    alert = Alert(
        source="manual",
        id=f"ssrf-{uuid.uuid4().hex[:8]}",
        title="web-frontend health check failing",
        service="web-frontend",
        severity="P2",
        annotations={"base_url": base_url},
    )
    result, audit = await _run(ts_env, _settings(rb_dir, policy, slack_sandbox), alert)

    assert internal.requests == [], "the internal server saw a request"
    refusal = f"refused by policy http.allow: {base_url}/health is not allowed"
    (fact,) = [e for e in audit if e.kind == "diagnostic"]
    assert fact.data["ok"] is False and refusal in fact.data["error"], fact.data
    (guarded,) = [e for e in audit if e.kind == "guard_refused"]
    assert guarded.message.startswith(f"diagnostic health (http) not run: {refusal}"), guarded.message
    assert result.outcome == "escalated"
    assert "approval_requested" not in _kinds(audit) and not result.actions
    assert slack_sandbox.messages, "the incident was reported to Slack"
    assert INTERNAL_TOKEN.encode() not in _slack_received(slack_sandbox)
    assert "refused by policy http.allow" in json.dumps(slack_sandbox.messages), "Slack says why"


@pytest.mark.parametrize("which", ["request", "undo"])
async def test_http_request_to_a_disallowed_url_is_refused_before_approval(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    internal: JsonService,
    slack_sandbox: SlackSandbox,
    which: str,
) -> None:
    """Diagnosis reaches the allowed target; the step's request (or its undo) aims at the internal server."""
    runbook = restart_runbook()  # approval required: nobody may even be asked
    bad = f"{internal.url}/internal/admin-console"
    step = runbook["plan"][0]["with"]
    if which == "request":
        step["url"] = bad
    else:
        step["undo"]["url"] = bad
    rb_dir, policy = write_config(tmp_path, [runbook], allow=[target.url])
    alert = Alert(
        source="manual",
        id=f"act-{uuid.uuid4().hex[:8]}",
        title="web health check failing",
        service="web-frontend",
        annotations={"base_url": target.url},
    )
    result, audit = await _run(ts_env, _settings(rb_dir, policy, slack_sandbox), alert)

    refusal = f"step restart-pool (http.request) refused by policy http.allow: {bad} is not allowed"
    assert result.outcome == "escalated"
    assert result.reason.startswith(f"blast radius: {refusal}"), result.reason
    kinds = _kinds(audit)
    assert "dry_run" in kinds and "approval_requested" not in kinds and "action_started" not in kinds
    (guarded,) = [e for e in audit if e.kind == "guard_refused"]
    assert guarded.message.startswith(refusal) and guarded.step == "restart-pool"
    assert "escalated" in kinds
    assert internal.requests == [], "the internal server saw a request"
    assert target.applied == [], "nothing was sent to the allowed target either"
    assert [d for d in target.deliveries if d.method == "POST"] == []
    blocks = json.dumps([m.get("blocks", []) for m in slack_sandbox.messages])
    assert '"actions"' not in blocks, "no approval buttons were posted: nobody was asked"


async def test_diagnostic_bodies_are_redacted_in_the_audit_and_on_slack(
    ts_env: WorkflowEnvironment, tmp_path: Path, slack_sandbox: SlackSandbox
) -> None:
    """A health endpoint that leaks a token and a password: the audit and Slack keep neither."""
    nested = JsonService(status=500, body={"token": "s3cr3t", "nested": {"password": "x"}}).start()
    flat = JsonService(status=200, body={"session": "s3cr3t-session", "state": "down"}).start()
    huge = JsonService(status=200, body={"api_key": "s3cr3t-key", "padding": "p" * 6000}).start()
    try:
        runbook: dict[str, Any] = {
            "apiVersion": "remedium/v1",
            "kind": "Runbook",
            "metadata": {"name": "leaky-health"},
            "match": {"service": ["leaky"]},
            "diagnose": [
                {"id": "health", "kind": "http", "with": {"url": f"{nested.url}/health"}},
                {"id": "flat", "kind": "http", "with": {"url": f"{flat.url}/flat"}},
                {"id": "huge", "kind": "http", "with": {"url": f"{huge.url}/huge"}},
            ],
            "decide": {"when": ["facts.health.ok and facts.health.value.body.token == 's3cr3t'"]},
            "plan": [
                {"id": "poke", "action": "http.request", "risk": "low", "with": {"url": f"{flat.url}/poke"}}
            ],
            "verify": {"checks": [], "success": ["true"], "every": "1s", "within": "10s"},
        }
        rb_dir, policy = write_config(
            tmp_path, [runbook], required_for=[], allow=[nested.url, flat.url, huge.url]
        )
        alert = Alert(source="manual", id=f"leak-{uuid.uuid4().hex[:8]}", title="leaky", service="leaky")
        result, audit = await _run(ts_env, _settings(rb_dir, policy, slack_sandbox), alert)
    finally:
        for service in (nested, flat, huge):
            service.stop()

    # the decision saw the real value (facts are not redacted for conditions), the readers did not
    assert "leaky-health chosen" in next(e.message for e in audit if e.kind == "decision"), result.reason
    facts = {e.message.split(" ")[0]: e for e in audit if e.kind == "diagnostic"}
    assert facts["health"].data["value"]["body"] == {
        "token": "[redacted]",
        "nested": {"password": "[redacted]"},
    }
    assert facts["flat"].data["value"]["body"] == {"session": "[redacted]", "state": "down"}
    assert facts["flat"].message == "flat (http): status=200 body={session: [redacted], state: down}"
    assert facts["huge"].data["value"]["truncated"] is True, "a large value is cut..."
    assert "[redacted]" in facts["huge"].data["value"]["preview"], "...after redaction"
    shown = json.dumps([e.model_dump(mode="json") for e in audit])
    assert "s3cr3t" not in shown
    sent = _slack_received(slack_sandbox)
    assert b"[redacted]" in sent, "the diagnosis reached Slack, redacted"
    assert b"s3cr3t" not in sent


# ------------------------------------------------------------------ the activities' own wall


async def test_the_probe_refuses_before_sending_and_names_what_it_refused(internal: JsonService) -> None:
    probe = HttpProbe(http_client(HttpSettings()), OutboundGuard([]))
    url = f"{internal.url}/internal/admin-console?x=/health"
    with pytest.raises(ApplicationError) as caught:
        await probe.run(HttpProbeParams.model_validate({"url": url}))
    assert caught.value.type == ErrorType.GUARD_REFUSED and caught.value.non_retryable
    assert caught.value.message.startswith(f"refused by policy http.allow: {url} is not allowed")
    assert internal.requests == []


async def test_http_request_execute_refuses_on_its_own(internal: JsonService) -> None:
    """Defence in depth: even if the workflow's check were skipped, the activity sends nothing."""
    action = HttpRequest(http_client(HttpSettings()), OutboundGuard(["http://127.0.0.1:1/"]))
    request = ActionRequest(incident_id="wf", step_id="s", action="http.request", params={})
    params = HttpRequestParams.model_validate({"url": f"{internal.url}/admin/restart"})
    with pytest.raises(ApplicationError) as caught:
        await action.execute(request, params)
    assert caught.value.type == ErrorType.GUARD_REFUSED
    assert internal.requests == []


async def test_a_name_resolving_to_loopback_is_refused_unless_an_entry_names_the_address(
    internal: JsonService,
) -> None:
    """DNS pointing an allowed name at 127.0.0.1 (rebinding, a hostile record) reaches nothing."""
    port = internal.url.rsplit(":", 1)[1]

    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    url = f"http://status.example.com:{port}/health"
    refused = HttpProbe(http_client(HttpSettings()), OutboundGuard([url], resolve=to_loopback))
    with pytest.raises(ApplicationError) as caught:
        await refused.run(HttpProbeParams.model_validate({"url": url}))
    assert "status.example.com resolves to 127.0.0.1" in str(caught.value)
    assert internal.requests == []

    # the same address named explicitly: the entry says so, so the probe goes out
    named = HttpProbe(http_client(HttpSettings()), OutboundGuard([internal.url]))
    value, _ = await named.run(HttpProbeParams.model_validate({"url": f"{internal.url}/health"}))
    assert value["status"] == 200 and [s.path for s in internal.requests] == ["/health"]


async def test_the_real_resolver_runs_and_localhost_needs_an_entry_naming_it(internal: JsonService) -> None:
    port = int(internal.url.rsplit(":", 1)[1])
    assert "127.0.0.1" in await resolve_host("localhost", port)
    url = f"http://localhost:{port}/health"
    with pytest.raises(ApplicationError):
        await HttpProbe(http_client(HttpSettings()), OutboundGuard([internal.url])).run(
            HttpProbeParams.model_validate({"url": url})
        )
    assert internal.requests == []
    value, _ = await HttpProbe(http_client(HttpSettings()), OutboundGuard([f"http://localhost:{port}"])).run(
        HttpProbeParams.model_validate({"url": url})
    )
    assert value["status"] == 200


async def test_redirects_are_not_followed(internal: JsonService) -> None:
    redirector = JsonService(redirect_to=f"{internal.url}/internal/admin-console").start()
    try:
        probe = HttpProbe(http_client(HttpSettings()), OutboundGuard([redirector.url]))
        value, _ = await probe.run(HttpProbeParams.model_validate({"url": f"{redirector.url}/health"}))
    finally:
        redirector.stop()
    assert value["status"] == 302
    assert internal.requests == [], "the redirect was followed"
    assert http_client(HttpSettings()).follow_redirects is False


async def test_large_answers_are_cut_before_they_become_a_fact(internal: JsonService) -> None:
    internal.body = {"blob": "b" * 200_000}
    probe = HttpProbe(http_client(HttpSettings()), OutboundGuard([internal.url]))
    value, _ = await probe.run(HttpProbeParams.model_validate({"url": f"{internal.url}/big"}))
    assert isinstance(value["body"], str) and value["body"].endswith("…[truncated]")
    assert len(value["body"]) < 3000


# ------------------------------------------------------------------ the matcher


ALLOW = ["http://good.example.com/api", "https://secure.example.com:8443/", "http://127.0.0.1:9000/admin/"]


@pytest.mark.parametrize(
    "url",
    [
        "http://good.example.com/api",
        "http://good.example.com/api/restart",
        "http://GOOD.Example.com./api/x",
        "http://good.example.com:80/api/x",
        "http://good.example.com/api/../api/x",
        "https://secure.example.com:8443/anything",
        "http://127.0.0.1:9000/admin/restart",
        "http://2130706433:9000/admin/restart",  # 127.0.0.1 spelled as one number: the same host
    ],
)
def test_allowed_urls(url: str) -> None:
    assert outbound_refusal(ALLOW, url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://good.example.com.evil.net/api", "no allow entry covers it"),
        ("http://good.example.com@evil.net/api", "credentials in a URL"),
        ("http://evil.net/http://good.example.com/api", "no allow entry covers it"),
        ("http://evil.net/?http://good.example.com/api", "no allow entry covers it"),
        ("http://good.example.com/apix", "no allow entry covers it"),
        ("http://good.example.com/ap", "no allow entry covers it"),
        ("http://good.example.com/api/../internal", "no allow entry covers it"),
        ("http://good.example.com/api/%2e%2e/internal", "no allow entry covers it"),
        ("http://good.example.com:8080/api", "no allow entry covers it"),
        ("https://good.example.com/api", "no allow entry covers it"),
        ("http://secure.example.com:8443/", "no allow entry covers it"),
        ("https://secure.example.com/", "no allow entry covers it"),
        ("http://127.0.0.1:9000/internal/admin-console?x=/admin/restart", "no allow entry covers it"),
        ("http://127.0.0.1:9001/admin/restart", "no allow entry covers it"),
        ("http://127.0.0.2:9000/admin/restart", "no allow entry covers it"),
        ("http://localhost:9000/admin/restart", "no allow entry covers it"),
        ("http://[::1]:9000/admin/restart", "no allow entry covers it"),
        ("http://169.254.169.254/latest/meta-data/", "no allow entry covers it"),
        ("http://metadata.google.internal/computeMetadata/v1/", "no allow entry covers it"),
        ("http://0.0.0.0:9000/admin/", "no allow entry covers it"),
        ("file:///etc/passwd", "not an http or https URL"),
    ],
)
def test_refused_urls(url: str, why: str) -> None:
    refusal = outbound_refusal(ALLOW, url)
    assert refusal is not None and refusal.startswith("refused by policy http.allow: ")
    assert " is not allowed" in refusal and why in refusal, refusal


def test_no_allow_entries_refuse_everything() -> None:
    assert outbound_refusal([], "https://example.com/") == (
        "refused by policy http.allow: https://example.com/ is not allowed "
        "(the policy allows no outbound HTTP)"
    )
    assert Policy().http.allow == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fd00:ec2::254",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "100.100.100.200",
    ],
)
def test_a_name_resolving_to_a_special_address_is_refused(address: str) -> None:
    refusal = outbound_refusal(ALLOW, "http://good.example.com/api/x", [address])
    assert refusal is not None and "resolves to" in refusal and "no allow entry names" in refusal


def test_resolution_to_ordinary_addresses_and_to_named_ones_is_allowed() -> None:
    assert outbound_refusal(ALLOW, "http://good.example.com/api/x", ["93.184.216.34", "10.1.2.3"]) is None
    # naming the address (for that port and path) is the explicit allow
    allow = [*ALLOW, "http://127.0.0.1:80/api"]
    assert outbound_refusal(allow, "http://good.example.com/api/x", ["127.0.0.1"]) is None
    assert outbound_refusal(ALLOW, "http://good.example.com/api/x", ["127.0.0.1"]) is not None
    # a name that is itself special, named by its entry
    meta = ["http://metadata.google.internal/computeMetadata/"]
    assert (
        outbound_refusal(meta, "http://metadata.google.internal/computeMetadata/v1/", ["169.254.169.254"])
        is None
    )


@pytest.mark.parametrize(
    "entry",
    [
        "ftp://files.example.com/",
        "http://user:pw@good.example.com/",
        "http://good.example.com/?q=1",
        "not a url",
    ],
)
def test_policy_refuses_allow_entries_that_are_not_prefixes(entry: str) -> None:
    with pytest.raises(ValueError, match=r"http\.allow entry"):
        HttpPolicy(allow=[entry])


def test_blast_radius_checks_http_scope_and_ignores_kubernetes_selectors() -> None:
    policy = Policy.model_validate(
        {"http": {"allow": ["http://good.example.com/api"]}, "blast_radius": {"label_selector": "team=web"}}
    )
    step = RenderedStep(id="restart", action="http.request", risk="medium", params={}, state_changing=True)
    ok = DryRun.model_validate(
        {
            "action": "http.request",
            "step_id": "restart",
            "target": "http://good.example.com/api/restart",
            "summary": "would send",
            "scope": {
                "kind": "http",
                "name": "http://good.example.com/api/restart",
                "urls": ["http://good.example.com/api/restart", "http://good.example.com/api/restore"],
            },
        }
    )
    assert blast_radius_refusal(policy, step, ok) is None
    scope = ok.scope
    assert scope is not None
    bad_undo = ok.model_copy(
        update={"scope": scope.model_copy(update={"urls": [scope.urls[0], "http://evil.net/restore"]})}
    )
    assert "refused by policy http.allow: http://evil.net/restore is not allowed" in str(
        blast_radius_refusal(policy, step, bad_undo)
    )
    rebound = ok.model_copy(
        update={"scope": scope.model_copy(update={"addresses": {"good.example.com": ["127.0.0.1"]}})}
    )
    assert "resolves to 127.0.0.1" in str(blast_radius_refusal(policy, step, rebound))


# ------------------------------------------------------------------ redaction


def test_redaction_of_nested_secret_fields_and_bearer_strings() -> None:
    body = {
        "token": "s3cr3t",
        "nested": {"password": "x", "list": [{"API_KEY": "k", "Private-Key": "pk"}, "Bearer abc.def-1"]},
        "Set-Cookie": "sid=1",
        "db_passwd": "p",
        "client_credential": "c",
        "Authorization": "Basic dXNlcjpwYXNz",
        "note": "retry with access_token=abc123&x=1",
        "status": "down",
        "count": 3,
    }
    assert redact(body) == {
        "token": "[redacted]",
        "nested": {
            "password": "[redacted]",
            "list": [{"API_KEY": "[redacted]", "Private-Key": "[redacted]"}, "[redacted]"],
        },
        "Set-Cookie": "[redacted]",
        "db_passwd": "[redacted]",
        "client_credential": "[redacted]",
        "Authorization": "[redacted]",
        "note": "retry with access_token=[redacted]&x=1",
        "status": "down",
        "count": 3,
    }
    assert "s3cr3t" not in fact_brief({"status": 500, "body": {"token": "s3cr3t"}})


def test_a_host_header_cannot_redirect_an_allowed_url_to_another_virtual_host() -> None:
    for model in (HttpProbeParams, HttpRequestParams):
        with pytest.raises(ValueError, match="Host header"):
            model.model_validate({"url": "http://good.example.com/api", "headers": {"HOST": "internal"}})
