"""Every sandbox the demo needs, started together and described as worker settings.

`remedium up --demo` and `remedium demo` point the same worker code at these servers that
production points at real clusters and SaaS APIs; the only difference is the settings,
which are also written to `<state-dir>/sandbox.env` so an operator can reuse them.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from remedium.demo.sandbox.jira import JiraSandbox
from remedium.demo.sandbox.kubernetes import KubernetesSandbox
from remedium.demo.sandbox.llm import CRASHLOOP, LlmSandbox
from remedium.demo.sandbox.loki import LokiSandbox
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.demo.sandbox.prometheus import PrometheusSandbox
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.demo.scenarios import ScenarioWorld, scenarios

SLACK_CHANNEL = "C0INCIDENTS"
JIRA_PROJECT = "OPS"
PAGERDUTY_FROM = "remedium@example.com"
WEBHOOK_SECRET = "demo-pagerduty-webhook-secret"
SLACK_SIGNING_SECRET = "demo-slack-signing-secret"
ALERTMANAGER_TOKEN = "demo-alertmanager-token"
DEMO_LLM_PRICES = (3.0, 15.0)  # USD per million input / output tokens: the breaker counts a cost

DEMO_POLICY = """\
# The demo's policy: high-risk steps wait for a human, the rest run inside the blast radius.
apiVersion: remedium/v1
kind: Policy
approval:
  # Slack clicks count only from the mapped user ids; UI and CLI names are self-declared.
  approvers: [demo-operator, {name: alice, slack: U0ALICE}, {name: bob, slack: U0BOB}]
  required_for: [high]
  timeout: 30m
autonomy: auto
# Earned autonomy: each runbook starts at conditional (high-risk steps ask, the rest act), climbs
# to full on a clean record and falls back to advisory at once on a rollback or a rejection.
trust:
  start: conditional
  promote:
    supervised: {after: 5, success_rate: 1.0, agreement: 0.9}
    conditional: {after: 10, success_rate: 0.95}
    full: {after: 20, success_rate: 0.98, window: 30d}
  demote_to: advisory
  review_sample: 0.1
  supervised_max_risk: medium
blast_radius:
  namespaces: [etl, payments, web, default]
  label_selector: "remedium.io/protected!=true"
  max_replicas_delta: 5
rate_limits:
  - action: kubernetes.rollout_restart
    target: "*"
    max: 3
    per: 30m
  - action: "jobs.*"
    target: "*"
    max: 2
    per: 1h
freeze:
  on_frozen: wait
  max_wait: 1h
  poll: 30s
# The demo's scenarios act through Kubernetes only: no outbound HTTP is allowed. A service
# reached by `http` steps needs its URL prefix here (loopback too: http://127.0.0.1:PORT/).
http:
  allow: []
"""


@dataclass
class DemoSandboxes:
    kube: KubernetesSandbox
    loki: LokiSandbox
    prometheus: PrometheusSandbox
    slack: SlackSandbox
    jira: JiraSandbox
    pagerduty: PagerDutySandbox
    llm: LlmSandbox
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    @classmethod
    def start(cls) -> DemoSandboxes:
        stack = ExitStack()
        try:
            kube = KubernetesSandbox().start()
            stack.callback(kube.stop)
            loki = LokiSandbox().start()
            stack.callback(loki.stop)
            prometheus = PrometheusSandbox().start()
            stack.callback(prometheus.stop)
            slack = SlackSandbox(channels={SLACK_CHANNEL: "incidents"}).start()
            stack.callback(slack.stop)
            jira = JiraSandbox(project=JIRA_PROJECT).start()
            stack.callback(jira.stop)
            pagerduty = PagerDutySandbox(users=(PAGERDUTY_FROM,)).start()
            stack.callback(pagerduty.stop)
            llm = LlmSandbox().start()
            stack.callback(llm.stop)
        except BaseException:
            stack.close()
            raise
        return cls(kube, loki, prometheus, slack, jira, pagerduty, llm, stack)

    def stop(self) -> None:
        self._stack.close()

    def world(self) -> ScenarioWorld:
        return ScenarioWorld(kube=self.kube, loki_url=self.loki.url, set_metric=self.prometheus.set)

    def seed_all(self) -> list[str]:
        """Every scenario's world at once (distinct namespaces), for `remedium up --demo`."""
        world = self.world()
        found = scenarios()
        for scenario in found.values():
            scenario.seed(world)
        return list(found)

    def settings_update(self, state_dir: Path, policy_file: Path | None) -> dict[str, Any]:
        """Settings pointing the worker and ingress at the sandboxes; writes kubeconfig and policy."""
        state_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.kube.write_kubeconfig(state_dir / "kubeconfig")
        if policy_file is None:
            policy_file = state_dir / "demo-policy.yaml"
            policy_file.write_text(DEMO_POLICY)
        return {
            "kubeconfig": kubeconfig,
            "kube_context": None,
            "policy_file": policy_file,
            "prometheus_url": self.prometheus.url,
            "loki_url": self.loki.url,
            "slack_token": SecretStr(self.slack.token),
            "slack_channel": SLACK_CHANNEL,
            "slack_api_url": self.slack.api_url,
            "jira_url": self.jira.url,
            "jira_user": self.jira.user,
            "jira_token": SecretStr(self.jira.token),
            "jira_project": JIRA_PROJECT,
            "pagerduty_token": SecretStr(self.pagerduty.token),
            "pagerduty_from": PAGERDUTY_FROM,
            "pagerduty_api_url": self.pagerduty.url,
            "pagerduty_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "slack_signing_secret": SecretStr(SLACK_SIGNING_SECRET),
            "alertmanager_token": SecretStr(ALERTMANAGER_TOKEN),
            # The scripted model (remedium/demo/sandbox/llm.py); other scenarios: set REMEDIUM_LLM_MODEL.
            "llm_base_url": self.llm.base_url,
            "llm_api_key": SecretStr(self.llm.api_key),
            "llm_model": CRASHLOOP,
            "llm_price_input_per_mtok": DEMO_LLM_PRICES[0],
            "llm_price_output_per_mtok": DEMO_LLM_PRICES[1],
        }

    def write_env(self, path: Path, update: dict[str, Any]) -> Path:
        """The same settings as REMEDIUM_* lines (sandbox credentials only; they guard nothing real)."""
        lines = ["# Settings of the sandbox started by `remedium up --demo` (REMEDIUM_CONFIG=this file)."]
        for key, value in update.items():
            if value is None:
                continue
            shown = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            lines.append(f"REMEDIUM_{key.upper()}={shown}")
            if key == "kubeconfig":
                lines.append(f"KUBECONFIG={shown}")  # what kubectl reads, for poking at the sandbox
        path.write_text("\n".join(lines) + "\n")
        return path

    def describe(self) -> list[tuple[str, str]]:
        return [
            ("Kubernetes API", self.kube.url),
            ("Loki", self.loki.url),
            ("Prometheus API", self.prometheus.url),
            ("Slack Web API", self.slack.api_url),
            ("Jira REST", self.jira.url),
            ("PagerDuty REST", self.pagerduty.url),
            ("LLM (Chat Completions)", self.llm.base_url),
        ]
