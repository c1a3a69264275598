"""The `metric` diagnostic: PromQL against Prometheus's HTTP API, kept as a typed fact.

Params: `query` (PromQL); `range` + `step` for a range query (else an instant query);
`by` (a label: also index the series by its value); `above` / `below` (a threshold: which
series breach it). The fact's value:

    {result_type, count, series: [{labels, value, values?}], value (first series' or the
    scalar's), min, max, by: {label value: value}, breached, breaching: [labels...]}

`value` of a range series is its last sample; `values` holds `[unix seconds, float]` pairs.
So conditions read naturally: `facts.lag.value.by["replica-2"] > 1800`,
`facts.lag.value.breached`, `facts.errors.value.count == 0`.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any, Self

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from remedium.catalog import (
    Clients,
    Diagnostic,
    Integration,
    IntegrationSettings,
    register_diagnostic,
    register_integration,
)
from remedium.models.common import Duration, UserModel
from remedium.telemetry import not_configured, read, telemetry_client


class MetricParams(UserModel):
    query: str = Field(min_length=1)
    range: Duration | None = Field(default=None, description="range query over this window, ending now")
    step: Duration = timedelta(seconds=30)
    by: str | None = Field(default=None, description="label whose value indexes `by`")
    above: float | None = None
    below: float | None = None


class PrometheusSettings(IntegrationSettings):
    """REMEDIUM_PROMETHEUS_URL, and a bearer token or basic auth, whichever is set."""

    model_config = SettingsConfigDict(
        env_prefix="REMEDIUM_PROMETHEUS_", extra="ignore", populate_by_name=True
    )

    url: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None


def prometheus_http_client(settings: PrometheusSettings) -> httpx.AsyncClient | None:
    return telemetry_client(settings.url, settings.token, settings.username, settings.password)


PROMETHEUS = register_integration(
    Integration(
        name="prometheus",
        settings=PrometheusSettings,
        connect=prometheus_http_client,
        describe=lambda settings: settings.url or "",
    )
)


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _breaches(value: float | None, params: MetricParams) -> bool:
    if value is None:
        return False
    return (params.above is not None and value > params.above) or (
        params.below is not None and value < params.below
    )


def metric_fact(data: dict[str, Any], params: MetricParams) -> dict[str, Any]:
    """Prometheus's `data` object as the fact runbooks test."""
    result_type = str(data.get("resultType"))
    raw = data.get("result")
    series: list[dict[str, Any]] = []
    if result_type in ("scalar", "string") and isinstance(raw, list):
        series.append({"labels": {}, "value": _number(raw[1])})
    elif result_type == "vector":
        for item in raw or []:
            series.append({"labels": dict(item.get("metric", {})), "value": _number(item["value"][1])})
    elif result_type == "matrix":
        for item in raw or []:
            values = [[float(t), _number(v)] for t, v in item.get("values", [])]
            series.append(
                {
                    "labels": dict(item.get("metric", {})),
                    "value": values[-1][1] if values else None,
                    "values": values,
                }
            )
    numbers = [s["value"] for s in series if s["value"] is not None]
    fact: dict[str, Any] = {
        "result_type": result_type,
        "count": len(series),
        "series": series,
        "value": series[0]["value"] if series else None,
        "min": min(numbers) if numbers else None,
        "max": max(numbers) if numbers else None,
        "by": {},
        "breached": False,
        "breaching": [],
    }
    if params.by:
        fact["by"] = {s["labels"].get(params.by, ""): s["value"] for s in series}
    if params.above is not None or params.below is not None:
        fact["breaching"] = [s["labels"] for s in series if _breaches(s["value"], params)]
        fact["breached"] = bool(fact["breaching"])
    return fact


@register_diagnostic
class MetricQuery(Diagnostic[MetricParams]):
    kind = "metric"
    params_model = MetricParams
    description = "PromQL instant or range query; thresholds with above/below."

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._client = client

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(PROMETHEUS.client(clients))

    async def run(self, params: MetricParams) -> tuple[Any, str | None]:
        if self._client is None:
            raise not_configured("Prometheus", "REMEDIUM_PROMETHEUS_URL")
        now = time.time()
        if params.range is not None:
            shown = f"PromQL range {params.range} step {params.step}: {params.query}"
            query = {
                "query": params.query,
                "start": f"{now - params.range.total_seconds():.3f}",
                "end": f"{now:.3f}",
                "step": f"{params.step.total_seconds():g}",
            }
            response = await read(self._client, "Prometheus", "/api/v1/query_range", query, shown)
        else:
            shown = f"PromQL: {params.query}"
            response = await read(
                self._client,
                "Prometheus",
                "/api/v1/query",
                {"query": params.query, "time": f"{now:.3f}"},
                shown,
            )
        body = response.json()
        return metric_fact(body.get("data") or {}, params), shown
