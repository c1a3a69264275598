"""The `metric` and `logs` diagnostics against the real Prometheus and the Loki sandbox."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from activities.loki import LogQuery, LogsParams, LokiSettings, loki_http_client
from activities.prometheus import MetricParams, MetricQuery, PrometheusSettings, prometheus_http_client
from remedium.demo.sandbox.loki import LokiSandbox
from tests.plugins.telemetry import RealPrometheus


@pytest.fixture
async def prom_client(prometheus: RealPrometheus) -> AsyncIterator[httpx.AsyncClient]:
    client = prometheus_http_client(PrometheusSettings(url=prometheus.url))
    assert client is not None
    async with client:
        yield client


@pytest.fixture
async def loki_client(loki: LokiSandbox) -> AsyncIterator[httpx.AsyncClient]:
    client = loki_http_client(LokiSettings(url=loki.url, org_id="tenant-a"))
    assert client is not None
    async with client:
        yield client


def _metric(name: str) -> str:
    return f"remedium_test_{name}_{uuid.uuid4().hex[:6]}"


def push(loki: LokiSandbox, labels: dict[str, str], lines: list[str]) -> None:
    now = time.time_ns()
    body = {
        "streams": [
            {
                "stream": labels,
                "values": [[str(now - (len(lines) - i) * 10**9), line] for i, line in enumerate(lines)],
            }
        ]
    }
    response = httpx.post(f"{loki.url}/loki/api/v1/push", json=body, timeout=5)
    assert response.status_code == 204, response.text


# ---------------------------------------------------------------- Prometheus


async def test_instant_query_indexes_series_and_applies_the_threshold(
    prometheus: RealPrometheus, prom_client: httpx.AsyncClient
) -> None:
    name = _metric("lag")
    prometheus.set_and_wait(name, {"replica": "replica-1"}, 240.0)
    prometheus.set_and_wait(name, {"replica": "replica-2"}, 8280.0)
    value, query = await MetricQuery(prom_client).run(MetricParams(query=name, by="replica", above=1800))
    assert query == f"PromQL: {name}"
    assert value["result_type"] == "vector"
    assert value["count"] == 2
    assert value["by"] == {"replica-1": 240.0, "replica-2": 8280.0}
    assert value["breached"] is True
    assert [labels["replica"] for labels in value["breaching"]] == ["replica-2"]
    assert value["max"] == 8280.0 and value["min"] == 240.0


async def test_range_query_keeps_samples(prometheus: RealPrometheus, prom_client: httpx.AsyncClient) -> None:
    name = _metric("errors")
    prometheus.set_and_wait(name, {"service": "api"}, 3.0)
    value, query = await MetricQuery(prom_client).run(
        MetricParams.model_validate({"query": name, "range": "30s", "step": "1s"})
    )
    assert value["result_type"] == "matrix"
    assert query is not None and query.startswith("PromQL range")
    series = value["series"][0]
    assert series["labels"]["service"] == "api"
    assert series["values"] and series["values"][-1][1] == 3.0 and value["value"] == 3.0


async def test_empty_result_is_a_fact_not_an_error(prom_client: httpx.AsyncClient) -> None:
    value, _ = await MetricQuery(prom_client).run(MetricParams(query=_metric("absent"), above=1))
    assert value["count"] == 0 and value["value"] is None and value["breached"] is False


async def test_syntax_error_is_final_and_quotes_prometheus(prom_client: httpx.AsyncClient) -> None:
    with pytest.raises(ApplicationError) as caught:
        await MetricQuery(prom_client).run(MetricParams(query="rate(up"))
    assert caught.value.non_retryable
    assert caught.value.type == "QueryError"
    assert "PromQL: rate(up" in caught.value.message
    assert "parse error" in caught.value.message


async def test_down_server_is_retryable_and_says_where() -> None:
    with socketless_url() as url:
        client = prometheus_http_client(PrometheusSettings(url=url))
        assert client is not None
        async with client:
            with pytest.raises(ApplicationError) as caught:
                await MetricQuery(client).run(MetricParams(query="up"))
    assert not caught.value.non_retryable
    assert caught.value.type == "Unavailable"
    assert "cannot reach Prometheus" in caught.value.message


def test_factory_applies_bearer_or_basic_auth() -> None:
    assert prometheus_http_client(PrometheusSettings()) is None
    bearer = prometheus_http_client(PrometheusSettings(url="http://p:9090", token=SecretStr("tok")))
    assert bearer is not None and bearer.headers["Authorization"] == "Bearer tok"
    basic = prometheus_http_client(
        PrometheusSettings(url="http://p:9090", username="u", password=SecretStr("pw"))
    )
    assert basic is not None and isinstance(basic.auth, httpx.BasicAuth)


# ---------------------------------------------------------------------- Loki


async def test_logs_extract_first_last_and_count(loki: LokiSandbox, loki_client: httpx.AsyncClient) -> None:
    push(
        loki,
        {"namespace": "etl", "job": "revenue"},
        [
            "starting",
            "Error: connection timeout to source DB replica-3 after 30s",
            "Error: connection timeout to source DB replica-2 after 30s",
            "done",
        ],
    )
    push(loki, {"namespace": "web", "job": "revenue"}, ["Error: connection timeout to source DB replica-9"])
    value, query = await LogQuery(loki_client).run(
        LogsParams.model_validate(
            {
                "query": '{namespace="etl", job=~"rev.*"} |= "timeout"',
                "extract": {"timeout": r"timeout to source DB (?P<replica>replica-\d+)"},
            }
        )
    )
    assert query == 'LogQL since 1:00:00: {namespace="etl", job=~"rev.*"} |= "timeout"'
    assert value["count"] == 2 and value["streams"] == 1
    assert value["extract"]["timeout"] == {
        "count": 2,
        "first": {"replica": "replica-3"},
        "last": {"replica": "replica-2"},
    }
    assert loki.received[-1].header("X-Scope-OrgID") == "tenant-a"


async def test_logs_empty_result(loki_client: httpx.AsyncClient) -> None:
    value, _ = await LogQuery(loki_client).run(
        LogsParams.model_validate({"query": '{namespace="nowhere"}', "extract": {"x": "(?P<a>a)"}})
    )
    assert value["count"] == 0
    assert value["extract"]["x"] == {"count": 0, "first": None, "last": None}


async def test_logql_error_is_final_and_quotes_loki(loki_client: httpx.AsyncClient) -> None:
    with pytest.raises(ApplicationError) as caught:
        await LogQuery(loki_client).run(LogsParams(query='{namespace="etl"'))
    assert caught.value.non_retryable and caught.value.type == "QueryError"
    assert "Loki refused" in caught.value.message and "syntax error: unexpected $end" in caught.value.message


async def test_loki_down_is_retryable() -> None:
    with socketless_url() as url:
        client = loki_http_client(LokiSettings(url=url))
        assert client is not None
        async with client:
            with pytest.raises(ApplicationError) as caught:
                await LogQuery(client).run(LogsParams(query='{a="b"}'))
    assert not caught.value.non_retryable and "cannot reach Loki" in caught.value.message


async def test_loki_5xx_is_retried_inside_the_activity(
    loki: LokiSandbox, loki_client: httpx.AsyncClient
) -> None:
    push(loki, {"app": "x"}, ["hello"])
    loki.fail_next(r"query_range", 503, count=2)
    value, _ = await LogQuery(loki_client).run(LogsParams(query='{app="x"}'))
    assert value["lines"] == ["hello"]
    assert len(loki.requests_to("GET", "query_range")) == 3


# ------------------------------------------------------------- Loki sandbox


def test_sandbox_answers_in_lokis_shapes(loki: LokiSandbox) -> None:
    push(loki, {"job": "varlogs", "level": "info"}, ["foo", "bar"])
    body = httpx.get(f"{loki.url}/loki/api/v1/query_range", params={"query": '{job="varlogs"}'}).json()
    # Same shape as the documented example in shared/vectors/loki_http_api_vectors.json.
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "streams"
    assert set(body["data"]) == {"resultType", "result", "stats"}
    stream = body["data"]["result"][0]
    assert stream["stream"] == {"job": "varlogs", "level": "info"}
    assert [v[1] for v in stream["values"]] == ["bar", "foo"]  # backward: newest first
    assert all(isinstance(v[0], str) and len(v[0]) >= 19 for v in stream["values"])  # ns strings
    forward = httpx.get(
        f"{loki.url}/loki/api/v1/query_range",
        params={"query": '{job="varlogs"}', "direction": "forward", "limit": "1"},
    ).json()
    assert [v[1] for v in forward["data"]["result"][0]["values"]] == ["foo"]
    assert httpx.get(f"{loki.url}/loki/api/v1/labels").json() == {
        "status": "success",
        "data": ["job", "level"],
    }
    assert httpx.get(f"{loki.url}/loki/api/v1/label/level/values").json()["data"] == ["info"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('{job="varlogs"', "syntax error: unexpected $end"),
        ('sum(rate({job="x"}[5m]))', "metric queries and functions"),
        ('{job="x"} | json', "supports only line filters"),
        ('{job!="x"}', "queries require at least one regexp or equality matcher"),
        ('{job=~"("}', "error parsing regexp"),
        ("", "syntax error: unexpected $end"),
    ],
)
def test_sandbox_refuses_what_it_cannot_parse_in_plain_text(
    loki: LokiSandbox, query: str, message: str
) -> None:
    response = httpx.get(f"{loki.url}/loki/api/v1/query_range", params={"query": query})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")
    assert message in response.text


def test_sandbox_line_filters(loki: LokiSandbox) -> None:
    push(loki, {"app": "api"}, ["GET / 200", "GET /x 500 error", "POST /y 502 Error", "GET /z 200"])

    def lines(query: str) -> list[str]:
        body = httpx.get(
            f"{loki.url}/loki/api/v1/query_range", params={"query": query, "direction": "forward"}
        ).json()
        return [v[1] for s in body["data"]["result"] for v in s["values"]]

    assert lines('{app="api"} |= "error"') == ["GET /x 500 error"]
    assert lines('{app="api"} |~ "(?i)error"') == ["GET /x 500 error", "POST /y 502 Error"]
    assert lines('{app="api"} != "200" !~ "POST"') == ["GET /x 500 error"]
    assert lines('{app=~"a.+"} |= `/z`') == ["GET /z 200"]


def test_sandbox_push_refuses_bad_bodies(loki: LokiSandbox) -> None:
    bad = httpx.post(
        f"{loki.url}/loki/api/v1/push", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and "PushRequest" in bad.text
    proto = httpx.post(
        f"{loki.url}/loki/api/v1/push", content=b"\x00", headers={"Content-Type": "application/x-protobuf"}
    )
    assert proto.status_code == 415
    assert json.loads(httpx.get(f"{loki.url}/loki/api/v1/labels").text)["data"] == []


class socketless_url:
    """A loopback URL where nothing listens (the port is bound, never listened on, then freed)."""

    def __enter__(self) -> str:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
