"""No template or condition can stall the worker or the ingress (issue 11, hardened inputs).

Observed on `remedium up --demo`, where worker and ingress share one event loop:
`{% for i in range(10**12) %}` passed `runbook validate` and, at run time, blocked the loop
(healthz and webhooks timed out, SIGTERM ignored); the condition `10 ** (10 ** 9) > 0` hung
validate and the worker; `'a' * 5*10**8` took 572 MB. Here: the same templates refused by
`remedium runbook validate` at their `path:line:col`; their run-time forms (the counts come
from the alert, so validate cannot know them) failing their incidents with the reason, on a
real worker sharing its event loop with the real ingress as under `remedium up`, while
/healthz keeps answering and other webhooks are accepted; and each size limit refused
before anything is allocated.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from remedium.errors import TemplateError
from remedium.ingress.pagerduty import sign
from remedium.ingress.serve import serve_ingress
from remedium.models import AuditEntry, IncidentResult, IncidentStatus
from remedium.runbook import templating
from remedium.runbook.template_limits import MAX_TEXT, BoundExceeded, bounded
from remedium.runbook.templating import check_condition, evaluate, references, render
from remedium.settings import Settings
from remedium.worker import running_worker
from tests.support import VECTORS_DIR, write_config

REPO = Path(__file__).resolve().parent.parent
VECTOR = json.loads((VECTORS_DIR / "pagerduty_webhook_incident_triggered.json").read_text())
SECRET = VECTOR["secrets"]["current"]
PD_HEADERS = {k: v for k, v in VECTOR["http"]["headers"].items() if k != "X-PagerDuty-Signature"}

RANGE = "{% for i in range(10**12) %}x{% endfor %}"
POWER = "10 ** (10 ** 9) > 0"
REPEAT = "{{ 'a' * 5*10**8 }}"

RANGE_SAYS = "range() would have 1000000000000 items (limit 100000)"
POWER_SAYS = "'**' result would have about 1000000001 digits (limit 4300)"
REPEAT_SAYS = "'*' result would be 500000000 characters (limit 1000000)"
TIME_SAYS = "template exceeded its 2 s time limit"


# --- validate ---------------------------------------------------------------------------------

# The three observed templates, and one in a `|` block (reported at its own line inside it).
RUNAWAY_RUNBOOK = """\
apiVersion: remedium/v1
kind: Runbook
metadata:
  name: runaway
match:
  source: [pagerduty]
diagnose:
  - id: probe
    kind: http
    with:
      url: "http://svc.test/{% for i in range(10**12) %}x{% endfor %}"
decide:
  when:
    - 10 ** (10 ** 9) > 0
plan:
  - id: restart
    action: http.request
    with:
      url: http://svc.test/restart
      json: {name: "{{ 'a' * 5*10**8 }}"}
verify:
  success: ["true"]
report:
  summary: |
    {{ alert.title }}
    {% if outcome == 'never' %}{{ 'x'.center(10**9) }}{% endif %}
"""


def test_validate_reports_the_observed_templates_at_their_place_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "runaway.yaml"
    path.write_text(RUNAWAY_RUNBOOK)
    # A subprocess with a generous timeout: validate hanging on a template fails here.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("remedium")), "runbook", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"{path}:11:12: template would exceed a limit: {RANGE_SAYS}",
        f"{path}:14:7: condition would exceed a limit: {POWER_SAYS}",
        f"{path}:20:20: template would exceed a limit: {REPEAT_SAYS}",
        f"{path}:26:5: template would exceed a limit: "
        "center() result would be 1000000000 characters (limit 1000000)",
    ]


def test_compiling_never_computes_an_intercepted_operator() -> None:
    """Jinja folds constants at compile time; an intercepted `**` is left to run time."""
    check_condition(POWER)  # compiles (validate's syntax check) without computing 10 ** 10**9
    assert references(POWER, condition=True).names == {}
    assert templating._ENV.compile_expression(POWER) is not None
    # A filter whose constant arguments go over a limit is not folded either: it fails when run.
    with pytest.raises(TemplateError, match=r"\|center width 1000000000 is over the limit of 1000000"):
        render("{{ 'x' | center(1000000000) }}", {})


# --- each limit, refused before it allocates -------------------------------------------------

ALERT = {"alert": {"title": "n=1000000000000", "labels": {"n": "1000000000000"}}, "facts": {}}
N = "(alert.labels.n | int)"


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (RANGE, RANGE_SAYS),
        (REPEAT, REPEAT_SAYS),
        ("{{ [1, 2] * 10**7 }}", "'*' result would take 80000002 characters as text (limit 10000000)"),
        ("{{ 10 ** 4000 * 10 ** 4000 }}", "'*' result would have about 8002 digits (limit 4300)"),
        ("{{ ('x' * 999999) + ('x' * 999999) }}", "'+' result would be 1999998 characters (limit 1000000)"),
        ("{% set a = 'x' * 999999 %}{{ a ~ a }}", "'~' result would be 1999998 characters (limit 1000000)"),
        (
            "{% set a = 'x' * 999999 %}{{ [a, a, a, a, a, a, a, a, a, a, a] }}",
            "a literal would take more than 10000000 characters as text (the limit)",
        ),
        ("{{ 'x'.center(" + N + ") }}", "center() result would be 1000000000000 characters"),
        ("{{ 'x'.ljust(" + N + ") }}", "ljust() result would be 1000000000000 characters"),
        ("{{ 'x'.rjust(" + N + ") }}", "rjust() result would be 1000000000000 characters"),
        ("{{ 'x'.zfill(" + N + ") }}", "zfill() result would be 1000000000000 characters"),
        ("{{ 'a\tb'.expandtabs(" + N + ") }}", "expandtabs() result would be 1000000000003 characters"),
        ("{{ 'aaaa'.replace('a', 'b' * 999999) }}", "replace() result would be 3999996 characters"),
        ("{{ ('x' * 999).join(range(2000) | map('string')) }}", "join() result would be 1997001 characters"),
        ("{{ (1).to_bytes(" + N + ", 'big') }}", "to_bytes() length 1000000000000 is over the limit"),
        ("{{ '%*d' % (" + N + ", 1) }}", "'%' width or precision 1000000000000 is over the limit of 1000000"),
        ("{{ '%0999999999d' % 1 }}", "'%' width or precision 999999999 is over the limit of 1000000"),
        ("{{ '%s%s' % ('x' * 999999, 'y' * 999999) }}", "'%' result would be 2000006 characters"),
        ("{{ '{:999999999}'.format(1) }}", "format() width or precision 999999999 is over the limit"),
        ("{{ '{:{w}}'.format(1, w=alert.labels.n) }}", "format() width or precision 1000000000000 is over"),
        ("{% set a = 'x' * 999999 %}{{ '{0}{0}'.format(a) }}", "format() result would be over the limit"),
        ("{{ 'x' | center(" + N + ") }}", "|center width 1000000000000 is over the limit of 1000000"),
        ("{{ 'a\nb' | indent(" + N + ") }}", "|indent width 1000000000000 is over the limit of 1000000"),
        ("{{ 'a\nb' | indent('x' * 999999) }}", "|indent result would be 2000001 characters"),
        ("{{ 'x' | wordwrap(" + N + ") }}", "|wordwrap width 1000000000000 is over the limit"),
        ("{{ 'a b c' | wordwrap(1, wrapstring='x' * 999999) }}", "|wordwrap result would be 5999999"),
        ("{{ 'x' | truncate(" + N + ") }}", "|truncate length 1000000000000 is over the limit"),
        ("{{ range(100000) | join('x' * 999) }}", "|join result would be 99899001 characters"),
        ("{{ 'aaaa' | replace('a', 'b' * 999999) }}", "|replace result would be 3999996 characters"),
        ("{{ '%0999999999d' | format(1) }}", "|format width or precision 999999999 is over the limit"),
        ("{{ range(3) | batch(" + N + ", 'x') | list }}", "|batch size 1000000000000 is over the limit"),
        (
            "{{ range(3) | slice(" + N + ") | list }}",
            "|slice count 1000000000000 is over the limit of 100000",
        ),
        ("{{ [1] | tojson(indent=1000) }}", "|tojson indent 1000 is over the limit of 64"),
        (
            "{% set big = ['x' * 999999] %}{{ ([0] * 11) | map('default', big, true) | sum(start=[]) }}",
            "|sum result would take 11000057 characters as text (limit 10000000)",
        ),
        ("{{ [1, 2] | map('center', " + N + ") | list }}", "|center width 1000000000000 is over the limit"),
        (
            "{{ dict.fromkeys(range(100000), 'x' * 999) }}",
            "the result of fromkeys() would take more than 10000000",
        ),
        ("{% set a = 'x' * 600000 %}{{ a }}{{ a }}", "template output would be over the limit of 1000000"),
        (
            "{% set a = 'x' * 600000 %}{% set b %}{{ a }}{{ a }}{% endset %}{{ b | length }}",
            "template output would be over the limit of 1000000",
        ),
        (
            "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{{ twice('x' * 600000) | length }}",
            "template output would be over the limit of 1000000",
        ),
    ],
)
def test_each_size_limit_refuses_before_allocating(template: str, says: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as caught:
            render(template, ALERT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert says in str(caught.value)
    assert peak < 100 * 1024 * 1024, f"{peak} bytes allocated before refusing"


def test_the_observed_repeat_raises_before_allocating_its_500_mb() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as caught:
            render(REPEAT, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == f"{REPEAT_SAYS} in template {REPEAT!r}"
    assert peak < 10 * 1024 * 1024


def test_the_observed_condition_fails_as_a_condition() -> None:
    with pytest.raises(TemplateError) as caught:
        evaluate(POWER, {})
    assert str(caught.value) == f"{POWER_SAYS} in {POWER!r}"


def test_a_template_running_past_its_deadline_is_stopped() -> None:
    nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError) as caught:
        render(nested, {})
    assert str(caught.value) == f"{TIME_SAYS} in template {nested!r}"
    doubling = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(40) }}"
    with pytest.raises(TemplateError, match="template exceeded its 2 s time limit"):
        render(doubling, {})


def _call() -> None:
    """Any Python call: where the tracer of `bounded` raises once the bound is passed."""


def test_a_bound_swallowed_on_the_way_still_fails_the_render() -> None:
    """CPython removes a tracer that raises; an `except Exception` (Jinja's constant folding has
    one) could swallow the bound. What the function returns then is refused all the same."""

    def swallowing() -> str:
        for _ in range(10**9):
            try:
                _call()
            except Exception:
                return "went on"
        return "never stopped"

    with pytest.raises(BoundExceeded, match=r"^template exceeded its 0.1 s time limit$"):
        bounded("template", swallowing, seconds=0.1)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the memory bound reads /proc")
def test_a_template_growing_the_process_past_its_memory_bound_is_stopped() -> None:
    """Each value within its limits, but 150 of them alive at once (one per macro level)."""
    deep = (
        "{% macro f(n, s) %}{% if n %}{% set u = s ~ 'x' %}{{ f(n - 1, u) }}{% endif %}{% endmacro %}"
        "{{ f(150, 'x' * 999000) }}"
    )
    assert render(deep, {}) == ""  # about 150 MB at its deepest: within the worker's 256 MB bound
    with pytest.raises(BoundExceeded, match=r"^template exceeded its memory limit \(32 MB\)$"):
        bounded("template", templating._template(deep).render, {}, memory=32 * 1024 * 1024)


def test_what_runbooks_do_renders_as_before() -> None:
    """Operators, literals, formatting and the filters the limits wrap, within their limits."""
    ctx = {"alert": {"title": "t", "labels": {"queue": "q"}}, "facts": {"depth": {"value": {"n": 1234}}}}
    assert render("{% for i in range(3) %}{{ i }},{% endfor %}", ctx) == "0,1,2,"
    assert render("{{ '%05d|%s' % (3, 'x') }} {{ '{:>6}'.format('ab') }} {{ 'a' ~ 1 ~ [1] }}", ctx) == (
        "00003|x     ab a1[1]"
    )
    assert render("{{ {'a': 1} }} {{ (1, 2) }} {{ [1] * 3 }} {{ 'ab' * 2 }} {{ 2 ** 10 }}", ctx) == (
        "{'a': 1} (1, 2) [1, 1, 1] abab 1024"
    )
    assert render("{{ 'ab' | center(6) }}|{{ 'a\nb' | indent(2, true) }}|{{ [1, 2] | join(',') }}", ctx) == (
        "  ab  |  a\n  b|1,2"
    )
    assert render("{{ range(5) | batch(2) | list }} {{ range(5) | slice(2) | list }}", ctx) == (
        "[[0, 1], [2, 3], [4]] [[0, 1, 2], [3, 4]]"
    )
    assert (
        render(
            "{{ [[1], [2]] | sum(start=[]) }} {{ {'a': 1} | tojson }} {{ 'aXb' | replace('X', '-') }}", ctx
        )
        == '[1, 2] {"a": 1} a-b'
    )
    assert render("{{ 'hello world' | truncate(8, leeway=0) }} {{ 'hello world' | wordwrap(5) }}", ctx) == (
        "hello... hello\nworld"
    )
    assert (
        render("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}{% set b %}blk{% endset %}{{ b }}", ctx)
        == "<1>blk"
    )
    assert render("{{ 'a,b'.split(',') }} {{ ','.join(['x', 'y']) }} {{ 'ab'.rjust(4, '*') }}", ctx) == (
        "['a', 'b'] x,y **ab"
    )
    assert evaluate("facts.depth.value.n // 1000 == 1 and 'x' * 3 == 'xxx'", ctx) is True
    assert render("{{ 'x' * " + str(MAX_TEXT) + " }}", ctx) == "x" * MAX_TEXT  # the limit itself is allowed


# --- a real worker on the event loop of the real ingress ------------------------------------------


def _runbook(name: str, title: str, url: str | None, when: str = "facts.probe.ok") -> dict[str, Any]:
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "match": {"source": ["pagerduty"], "title": title},
        "diagnose": [{"id": "probe", "kind": "http", "with": {"url": url}}] if url else [],
        "decide": {"when": [when]},
        "plan": [
            {"id": "noop", "action": "http.request", "risk": "low", "with": {"url": "http://svc.test/x"}}
        ],
        "verify": {"success": ["true"]},
    }


COUNT = "(alert.title | regex('n=([0-9]+)') | int)"
RUNBOOKS = [
    # The observed templates, with their counts from the alert: validate cannot know those.
    _runbook("range", "^range ", "http://svc.test/{% for i in range(" + COUNT + ") %}x{% endfor %}"),
    _runbook("power", "^power ", None, when="10 ** " + COUNT + " > 0"),
    _runbook("repeat", "^repeat ", "http://svc.test/{{ 'a' * " + COUNT + " }}"),
    # Nothing here goes over a size limit: it runs for 10**10 iterations, until its deadline.
    _runbook(
        "slow",
        "^slow ",
        "http://svc.test/{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ),
]


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _event(incident_id: str, title: str) -> bytes:
    event = json.loads(VECTOR["raw_body"])["event"]
    event["id"] = str(uuid.uuid4())
    event["data"].update(id=incident_id, title=title)
    return json.dumps({"event": event}, separators=(",", ":")).encode()


@asynccontextmanager
async def _up(client: Client, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Worker and ingress in this one event loop, as `remedium up` runs them."""
    rb_dir, policy = write_config(tmp_path, RUNBOOKS)
    settings = Settings(
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        ingress_address=_free_address(),
        pagerduty_webhook_secret=SecretStr(SECRET),
    )

    async def provide() -> Client:
        return client

    stop = asyncio.Event()
    async with running_worker(settings, client):
        ingress = asyncio.create_task(serve_ingress(settings, provide, stop))
        async with httpx.AsyncClient(base_url=f"http://{settings.ingress_address}", timeout=30) as http:
            for _ in range(200):
                try:
                    await http.get("/metrics")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            try:
                yield http
            finally:
                stop.set()
                await ingress


async def _trigger(http: httpx.AsyncClient, title: str) -> str:
    incident = f"TL{uuid.uuid4().hex[:10].upper()}"
    body = _event(incident, title)
    headers = {**PD_HEADERS, "X-PagerDuty-Signature": sign(body, SECRET.encode())}
    response = await http.post("/webhooks/pagerduty", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"workflow_id": f"incident-pagerduty-{incident}", "started": True}
    return str(response.json()["workflow_id"])


async def test_runaway_templates_fail_their_incidents_while_the_ingress_keeps_answering(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    async with _up(client, tmp_path) as http:
        # /healthz asked from another thread, as from outside: a stalled event loop shows here
        # (a probe on the loop itself would just wait out the stall unmeasured).
        probe = _HealthProbe(str(http.base_url))
        probe.start()
        while not probe.latencies:  # the probe is answering before the first webhook
            await asyncio.sleep(0.01)
        slow = await _trigger(http, "slow n=1")
        handle = client.get_workflow_handle(slow)
        for _ in range(400):  # until its diagnostic (the 2 s template) is running
            status = await handle.query("status", result_type=IncidentStatus)
            if status.stage == "diagnosing":
                break
            await asyncio.sleep(0.02)
        # While the slow template renders on the worker: the ingress answers, and starts others.
        seconds, health = await asyncio.to_thread(probe.ask)
        assert seconds < 1.0  # the one timed assertion the issue asks for
        assert health == 200
        others = {
            "range": await _trigger(http, "range n=1000000000000"),
            "power": await _trigger(http, "power n=1000000000"),
            "repeat": await _trigger(http, "repeat n=500000000"),
        }
        results = {
            name: await asyncio.wait_for(
                client.get_workflow_handle(wid, result_type=IncidentResult).result(), timeout=90
            )
            for name, wid in {"slow": slow, **others}.items()
        }
        audits = {
            name: await client.get_workflow_handle(wid).query("audit", result_type=list[AuditEntry])
            for name, wid in {"slow": slow, **others}.items()
        }
        ended = time.monotonic()
        while probe.last_started() < ended:  # one more answer, asked after every incident ended
            await asyncio.sleep(0.01)
        latencies = await asyncio.to_thread(probe.stop)

    # Asked back to back (50 ms apart) from before the first webhook until after every incident
    # had ended, so a stall anywhere in between is one slow answer: none took a second.
    assert all(code == 200 for _, code in latencies), latencies
    assert max(seconds for seconds, _ in latencies) < 1.0, latencies

    for name in ("slow", "range", "repeat"):  # a diagnose template: a failed fact, then no decision
        assert results[name].outcome == "escalated", results[name]
        facts = [e.message for e in audits[name] if e.kind == "diagnostic"]
        assert len(facts) == 1 and facts[0].startswith("probe (http): failed: "), facts
    assert TIME_SAYS in _fact(audits["slow"])
    assert RANGE_SAYS in _fact(audits["range"])
    assert REPEAT_SAYS in _fact(audits["repeat"])
    for name in ("slow", "range", "repeat"):  # the failed diagnostic is named, not a false condition
        assert results[name].reason.startswith(
            f"no candidate runbook's conditions hold ({name}: diagnostic probe failed: "
        ), results[name].reason

    power = results["power"]  # a condition: the decision says why
    assert power.outcome == "escalated"
    assert power.reason.startswith(
        f"no candidate runbook's conditions hold (power: condition `10 ** {COUNT} > 0` could not be "
        f"evaluated: {POWER_SAYS} in "
    ), power.reason
    decisions = [e.message for e in audits["power"] if e.kind == "decision"]
    assert decisions == [power.reason]


class _HealthProbe:
    """GET /healthz every 50 ms from its own thread, each answer's time and status kept."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=30)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies: list[tuple[float, int]] = []
        self._last_started = 0.0

    def start(self) -> None:
        self._thread.start()

    def ask(self) -> tuple[float, int]:
        started = time.monotonic()
        response = self._http.get("/healthz")
        return time.monotonic() - started, response.status_code

    def last_started(self) -> float:
        """When the latest answered probe was sent (monotonic clock)."""
        return self._last_started if self.latencies else 0.0

    def _run(self) -> None:
        while not self._done.is_set():
            started = time.monotonic()
            self.latencies.append(self.ask())
            self._last_started = started
            self._done.wait(0.05)

    def stop(self) -> list[tuple[float, int]]:
        self._done.set()
        self._thread.join()
        self._http.close()
        return self.latencies


def _fact(audit: list[AuditEntry]) -> str:
    return next(e.message for e in audit if e.kind == "diagnostic")
