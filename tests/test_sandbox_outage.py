"""A reporting sandbox can go down and come back on the same port with its state (fault campaigns).

bench/faults.py --integrations stops the Slack, Jira and PagerDuty sandboxes during incidents
and starts them again where the workers expect them; while down, new connections are refused
and a keep-alive connection opened before the stop gets no answer, as with a restarted service.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from activities.pagerduty import PagerDutySettings, pagerduty_http_client
from remedium.demo.sandbox.pagerduty import PagerDutySandbox


async def test_stopped_sandbox_refuses_then_comes_back_on_its_port_with_its_state() -> None:
    sandbox = PagerDutySandbox().start()
    try:
        sandbox.add_incident("PSTAY01", title="survives the outage")
        url = sandbox.url
        settings = PagerDutySettings(token=SecretStr(sandbox.token), api_url=url)
        client = pagerduty_http_client(settings)
        assert client is not None
        async with client:
            before = await client.get("/incidents/PSTAY01")  # opens a keep-alive connection
            assert before.status_code == 200

            sandbox.stop()
            with pytest.raises(httpx.TransportError):
                await client.get("/incidents/PSTAY01")  # the pooled connection answers nothing
            with pytest.raises(httpx.ConnectError):
                await client.get("/incidents/PSTAY01")  # and a new one is refused

            port = httpx.URL(url).port
            assert port is not None
            sandbox.start(port)
            assert sandbox.url == url
            after = await client.get("/incidents/PSTAY01")
        assert after.status_code == 200
        assert after.json()["incident"]["title"] == "survives the outage"
    finally:
        sandbox.stop()
