"""The demo's Prometheus stand-in answers in Prometheus's own shapes (checked against live captures)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from remedium.demo.sandbox.prometheus import PrometheusSandbox

VECTORS = json.loads(
    (
        Path(__file__).resolve().parents[2] / "shared" / "vectors" / "prometheus_http_api_vectors.json"
    ).read_text()
)


@pytest.fixture
def prom() -> Iterator[PrometheusSandbox]:
    sandbox = PrometheusSandbox().start()
    yield sandbox
    sandbox.stop()


def _shape(value: object) -> object:
    """Keys and types, not values: what a client relies on."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k != "metric"}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, int | float):
        return "number"  # Prometheus writes whole-second timestamps as integers, others as floats
    return type(value).__name__


def test_instant_and_range_queries_have_prometheus_shapes(prom: PrometheusSandbox) -> None:
    now = time.time()
    prom.set("etl_replica_lag_seconds", {"replica": "replica-2"}, 8280, at=now - 30)
    prom.set("etl_replica_lag_seconds", {"replica": "replica-1"}, 12, at=now - 30)
    with httpx.Client(base_url=prom.url) as http:
        instant = http.get(
            "/api/v1/query", params={"query": 'etl_replica_lag_seconds{replica="replica-2"}'}
        ).json()
        regex = http.post(
            "/api/v1/query", data={"query": 'etl_replica_lag_seconds{replica=~"replica-.*"}'}
        ).json()
        ranged = http.get(
            "/api/v1/query_range",
            params={"query": "etl_replica_lag_seconds", "start": now - 20, "end": now, "step": "10"},
        ).json()
        bad = http.get("/api/v1/query", params={"query": "rate(etl_replica_lag_seconds)"})
        empty = http.get("/api/v1/query", params={"query": "nothing_here"}).json()
    assert instant["data"]["result"][0]["metric"] == {
        "__name__": "etl_replica_lag_seconds",
        "replica": "replica-2",
    }
    assert instant["data"]["result"][0]["value"][1] == "8280"
    assert _shape(instant) == _shape(VECTORS["GET /api/v1/query?query=up"])
    assert len(regex["data"]["result"]) == 2
    assert _shape(ranged) == _shape(VECTORS["GET /api/v1/query_range?query=up&start=..&end=..&step=2"])
    assert len(ranged["data"]["result"]) == 2 and len(ranged["data"]["result"][0]["values"]) == 3
    assert bad.status_code == 400
    assert bad.json()["status"] == "error" and bad.json()["errorType"] == "bad_data"
    assert bad.json()["error"].startswith('invalid parameter "query": ')
    assert empty == {"status": "success", "data": {"resultType": "vector", "result": []}}
