"""The deployment files: both compose files, the Kubernetes overlay, and RBAC held to the real calls.

No Docker engine or cluster runs here, so each file is checked the way its own tool reads it:
`docker-compose config` (Debian's v1) for the compose files, `kubectl kustomize` for the overlay,
every rendered document against the Kubernetes 1.32 schemas (kubernetes-validate, bundled,
offline). The ClusterRole is compared with what every registered Kubernetes action (dry run,
execute, rollback) and the `kubernetes` diagnostic really send, recorded by the sandbox
apiserver from the real `kubernetes` client: it must cover every call and grant nothing more.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from activities.kubernetes import (
    DeletePod,
    KubernetesFactParams,
    KubernetesFacts,
    PatchConfigMap,
    RerunJob,
    Rollback,
    RolloutRestart,
    Scale,
    TriggerCronJob,
    WaitJob,
    WaitRollout,
)
from remedium.bindings import params_of
from remedium.catalog import Action, Clients, action_catalog, diagnostic_catalog, load_catalog
from remedium.demo.sandbox.kubernetes import KubernetesSandbox, configmap, cronjob, deployment, job
from remedium.models import ActionRequest, ActionResult, RollbackRequest
from remedium.names import SEARCH_ATTRIBUTES
from remedium.policy_loader import validate_policy_file
from tests.conftest import REPO, dev_address, require_real

OVERLAY = REPO / "deploy" / "kubernetes" / "overlays" / "example"
COMPOSE_ENV = REPO / "deploy" / "compose"
SECRET_FILES = ("secrets", "postgres", "grafana")
K8S_VERSION = "1.32.0"
NS = "payments"
# What each compose secret file holds; a secret named here must never be written in the file.
SECRET_NAMES = re.compile(r"(PASSWORD|PWD|SECRET|TOKEN|API_KEY)$")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_real(name, f"`{name}` is not on PATH (apt-get install {name})")
    assert path is not None
    return path


# ---------------------------------------------------------------------- compose


def compose_config(file: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [_tool("docker-compose"), "-f", str(REPO / file), "config"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = yaml.safe_load(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped examples, filled in the way a user would: one recognisable value per secret."""
    folder = tmp_path_factory.mktemp("compose-secrets")
    for name in SECRET_FILES:
        lines = []
        for line in (COMPOSE_ENV / f"{name}.env.example").read_text().splitlines():
            key, sep, value = line.partition("=")
            assert not (sep and value), f"{name}.env.example gives {key} a value: names only"
            lines.append(f"{key}=sentinel-{key.lower()}" if sep and not key.startswith("#") else line)
        (folder / f"{name}.env").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def production(secrets_dir: Path) -> dict[str, Any]:
    return compose_config("docker-compose.yml", {"REMEDIUM_SECRETS_DIR": str(secrets_dir)})


def test_production_compose_runs_temporal_on_postgres_behind_its_schema_job(
    production: dict[str, Any],
) -> None:
    services = production["services"]
    assert {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "worker",
        "ingress",
        "prometheus",
        "grafana",
    } <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: {image!r}"

    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["depends_on"] == {"temporal-schema": {"condition": "service_completed_successfully"}}
    assert temporal["environment"]["POSTGRES_PWD"] == "sentinel-postgres_pwd"  # from postgres.env

    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    assert schema["image"].split(":")[1] == temporal["image"].split(":")[1], "schema tool = server version"
    assert schema["depends_on"] == {"postgresql": {"condition": "service_healthy"}}
    script = (REPO / "deploy/temporal/temporal-schema.sh").read_text()
    for db, folder in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        assert f"{db}:{folder}" in script
    for command in ("create-database", "setup-schema", "update-schema"):
        assert f'--db "$db" {command}' in script
    assert services["postgresql"]["environment"]["POSTGRES_PASSWORD"] == "sentinel-postgres_password"

    namespace_job = services["temporal-namespace"]
    assert namespace_job["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    registering = (REPO / "deploy/temporal/temporal-namespace.sh").read_text()
    names = re.search(r"for name in ([\w ]+); do", registering)
    assert names and set(names.group(1).split()) == {key.name for key in SEARCH_ATTRIBUTES}
    assert "--type Keyword" in registering

    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_production_compose_worker_and_ingress_follow_the_contract(
    production: dict[str, Any], secrets_dir: Path
) -> None:
    services = production["services"]
    worker, ingress = services["worker"], services["ingress"]
    assert worker["command"] == ["remedium", "worker"]
    assert ingress["command"] == ["remedium", "ingress"]
    for service in (worker, ingress):
        assert service["build"]["context"] == str(REPO)
        assert service["environment"]["REMEDIUM_TEMPORAL_ADDRESS"] == "temporal:7233"
        assert service["depends_on"] == {
            "temporal-namespace": {"condition": "service_completed_successfully"}
        }
    assert worker["environment"]["REMEDIUM_METRICS_ADDRESS"] == "0.0.0.0:9464"
    assert ingress["environment"]["REMEDIUM_INGRESS_ADDRESS"] == "0.0.0.0:8088"
    assert [(p["published"], p["target"]) for p in ingress["ports"]] == [(8088, 8088)]
    assert "ports" not in worker, "the worker is reached by Prometheus only, inside the stack"
    # The secret reached the ingress from secrets.env, the one place it is written.
    assert ingress["environment"]["REMEDIUM_PAGERDUTY_WEBHOOK_SECRET"] == (
        "sentinel-remedium_pagerduty_webhook_secret"
    )

    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in raw["services"].items():
        written = service.get("environment") or {}
        leaked = [key for key in written if SECRET_NAMES.search(key)]
        assert not leaked, f"{name} writes secrets in docker-compose.yml: {leaked}"
        for value in written.values():
            assert "${" not in str(value), f"{name}: secrets come from env_file, not interpolation"
    anchor = raw["x-remedium"]
    assert "${REMEDIUM_SECRETS_DIR:-./deploy/compose}/secrets.env" in anchor["env_file"]
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "deploy/compose/*.env" in ignored and "!deploy/compose/remedium.env" in ignored

    grafana = services["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "sentinel-gf_security_admin_password"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("/")}
    assert mounts["/etc/grafana/provisioning"] == str(REPO / "deploy/grafana/provisioning")
    assert mounts["/etc/grafana/dashboards"] == str(REPO / "deploy/grafana/dashboards")
    assert (REPO / "deploy/grafana/dashboards/remedium.json").is_file(), "the dashboard Grafana provisions"
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/remedium.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    source = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_the_worker_and_the_ingress(production: dict[str, Any]) -> None:
    prometheus = production["services"]["prometheus"]
    mounted = [v for v in prometheus["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    assert mounted == [f"{REPO / 'deploy/prometheus/prometheus.yml'}:/etc/prometheus/prometheus.yml:ro"]
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert ("/metrics", "worker:9464") in targets
    assert ("/metrics", "ingress:8088") in targets
    promtool = shutil.which("promtool")
    if promtool:  # the Debian prometheus package's own checker
        done = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(REPO / "deploy/prometheus/prometheus.yml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr


async def test_the_namespace_job_registers_the_search_attributes_once(dev_env: WorkflowEnvironment) -> None:
    """The compose stack's one-shot job, run as its container runs it, against a real server."""
    namespace = f"deploy-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the venv's `temporal`
        "TEMPORAL_ADDRESS": dev_address(dev_env),
        "REMEDIUM_NAMESPACE": namespace,
    }
    script = str(REPO / "deploy/temporal/temporal-namespace.sh")
    for attempt in ("fresh", "again"):  # `docker compose up` runs it on every start
        done = await asyncio.to_thread(
            subprocess.run, ["/bin/sh", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{attempt}: {done.stdout}{done.stderr}"
        assert f"namespace {namespace} is ready for Remedium" in done.stdout
    assert "search attribute IncidentStage exists" in done.stdout
    listed = await dev_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert {key.name: keyword for key in SEARCH_ATTRIBUTES}.items() <= dict(listed.custom_attributes).items()


def test_dev_compose_is_the_dev_server_in_one_container() -> None:
    dev = compose_config("docker-compose.dev.yml", {"REMEDIUM_PAGERDUTY_WEBHOOK_SECRET": "sentinel"})
    services = dev["services"]
    assert set(services) == {"temporal", "worker", "ingress"}
    assert services["temporal"]["command"][:2] == ["server", "start-dev"]
    for key in SEARCH_ATTRIBUTES:
        assert f"--search-attribute={key.name}=Keyword" in services["temporal"]["command"]
    assert services["worker"]["command"] == ["remedium", "worker"]
    assert services["ingress"]["command"] == ["remedium", "ingress"]
    assert services["ingress"]["environment"]["REMEDIUM_INGRESS_ADDRESS"] == "0.0.0.0:8088"


# ------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    done = subprocess.run(
        [_tool("kubectl"), "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = {d["kind"] for d in rendered}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "RoleBinding",
        "NetworkPolicy",
        "ConfigMap",
    } <= kinds
    for doc in rendered:
        # strict: an unknown field (a typo) fails, as `kubectl apply --validate=strict` would
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = one(rendered, "Service", "remedium-ingress") | {"spec": {"ports": [{"port": "webhooks"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_overlay_sets_namespace_image_temporal_and_secret_names(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["kind"] not in ("ClusterRole", "RoleBinding", "Namespace"):
            assert doc["metadata"]["namespace"] == "remedium", doc["metadata"]["name"]
    temporal = next(
        d for d in by_kind(rendered, "ConfigMap") if d["metadata"]["name"].startswith("remedium-temporal")
    )
    assert temporal["data"]["TEMPORAL_ADDRESS"].endswith(".tmprl.cloud:7233")
    worker = one(rendered, "Deployment", "remedium-worker")
    ingress = one(rendered, "Deployment", "remedium-ingress")
    assert worker["spec"]["replicas"] == 3 and ingress["spec"]["replicas"] == 2
    for deployment_ in (worker, ingress):
        pod = deployment_["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "registry.example.com/platform/remedium:0.1.0"
        refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
        assert refs == [temporal["metadata"]["name"]], "the generated name (with its hash) is used"
        tls = next(v for v in pod["volumes"] if v["name"] == "temporal-tls")
        assert tls["secret"]["secretName"] == "temporal-cloud-mtls"
        env = {e["name"]: e for e in container["env"]}
        assert env["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "temporal-cloud-api-key"
    command = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["command"]
        for d in (worker, ingress)
    }
    assert command == {"remedium-worker": ["remedium", "worker"], "remedium-ingress": ["remedium", "ingress"]}


def test_no_secret_value_is_in_the_manifests(rendered: list[dict[str, Any]]) -> None:
    assert not by_kind(rendered, "Secret"), "Secrets are created out of band, never shipped"
    for deployment_ in by_kind(rendered, "Deployment"):
        for container in deployment_["spec"]["template"]["spec"]["containers"]:
            for env in container["env"]:
                if SECRET_NAMES.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]
    for config in by_kind(rendered, "ConfigMap"):
        assert not [k for k in config.get("data", {}) if SECRET_NAMES.search(k)]


def test_pods_are_locked_down_pinned_and_probed(rendered: list[dict[str, Any]]) -> None:
    for deployment_ in by_kind(rendered, "Deployment"):
        name = deployment_["metadata"]["name"]
        pod = deployment_["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", container["image"]), name
            assert not container["image"].endswith(":latest"), name
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            assert "livenessProbe" in container and "readinessProbe" in container, name
    ingress = one(rendered, "Deployment", "remedium-ingress")["spec"]["template"]["spec"]
    assert ingress["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert ingress["automountServiceAccountToken"] is False, "the ingress never calls the Kubernetes API"
    worker = one(rendered, "Deployment", "remedium-worker")["spec"]["template"]["spec"]
    assert worker["serviceAccountName"] == "remedium-worker"
    assert worker["containers"][0]["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_network_policies_open_only_the_webhook_and_metrics_ports(rendered: list[dict[str, Any]]) -> None:
    ingress = one(rendered, "NetworkPolicy", "remedium-ingress")["spec"]
    worker = one(rendered, "NetworkPolicy", "remedium-worker")["spec"]
    for spec in (ingress, worker):
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        dns = spec["egress"][0]
        assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert [[(p["protocol"], p["port"]) for p in rule["ports"]] for rule in ingress["ingress"]] == [
        [("TCP", 8088)]
    ]
    assert ingress["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert {p["port"] for rule in ingress["egress"][1:] for p in rule["ports"]} == {7233}
    assert [[(p["protocol"], p["port"]) for p in rule["ports"]] for rule in worker["ingress"]] == [
        [("TCP", 9464)]
    ]
    assert "from" in worker["ingress"][0], "the metrics port is open to the monitoring namespace only"
    assert 7233 in {p["port"] for rule in worker["egress"][1:] for p in rule["ports"]}


# ------------------------------------------------------------------------- RBAC


def granted(rendered: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    (role,) = by_kind(rendered, "ClusterRole")
    rules = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    rules.add((group, resource, verb))
    return rules


@pytest.fixture
async def kube_clients(kube_sandbox: KubernetesSandbox) -> AsyncIterator[Clients]:
    async with httpx.AsyncClient() as http:
        yield Clients(http=http, kubernetes=kube_sandbox.api_client())


class Exerciser:
    """Runs actions as the workflow does (dry run, execute, rollback) and notes which ran."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.ran: set[str] = set()
        self.facts: set[str] = set()

    async def step(
        self, cls: type[Action[Any]], params: dict[str, Any], undo: bool = True, step: str = ""
    ) -> ActionResult:
        action = cls.build(self.clients)
        step_id = step or cls.name.replace(".", "-")
        req = ActionRequest(incident_id="inc-rbac", step_id=step_id, action=cls.name, params=params)
        typed = params_of(action.params_model, req.params, action.name)
        await action.dry_run(req, typed)
        result = await action.execute(req, typed)
        if undo and result.checkpoint is not None:
            await action.rollback(RollbackRequest(incident_id="inc-rbac", checkpoint=result.checkpoint))
        self.ran.add(cls.name)
        return result

    async def fact(self, **params: Any) -> Any:
        diagnostic = KubernetesFacts.build(self.clients)
        value, _ = await diagnostic.run(
            params_of(diagnostic.params_model, {"namespace": NS, **params}, "kubernetes")
        )
        self.facts.add(params["resource"])
        return value


def rolled_out(sandbox: KubernetesSandbox, name: str) -> bool:
    d = sandbox.get("apps/v1", "Deployment", NS, name) or {}
    status, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas")
    return bool(
        status.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and status.get("updatedReplicas") == status.get("availableReplicas") == want
    )


def workload(kind: str, name: str) -> dict[str, Any]:
    template = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": name, "image": "r/x:1"}]},
    }
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "StatefulSet":
        spec |= {"replicas": 2, "serviceName": name}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


def owned_pod(owner: dict[str, Any], name: str) -> dict[str, Any]:
    ref = {
        "apiVersion": "apps/v1",
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": ref["name"]}, "ownerReferences": [ref]},
        "spec": owner["spec"]["template"]["spec"],
    }


def job_failed(sandbox: KubernetesSandbox, name: str) -> bool:
    status = (sandbox.get("batch/v1", "Job", NS, name) or {}).get("status") or {}
    return any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def pods_settled(sandbox: KubernetesSandbox) -> bool:
    pods = sandbox.list_objects("v1", "Pod", NS, "app=api")
    return len(pods) == 2 and not any(p["metadata"].get("deletionTimestamp") for p in pods)


async def test_the_cluster_role_grants_exactly_what_the_kubernetes_actions_call(
    rendered: list[dict[str, Any]], kube_sandbox: KubernetesSandbox, kube_clients: Clients
) -> None:
    sandbox = kube_sandbox
    load_catalog()
    kube_actions = {
        name for name, cls in action_catalog().items() if cls.__module__.startswith("activities.kubernetes")
    }
    assert diagnostic_catalog()["kubernetes"] is KubernetesFacts
    run = Exerciser(kube_clients)
    wait = {"timeout": "60s", "poll": "50ms"}

    sandbox.apply(deployment(NS, "api", replicas=2, image="registry.example/api:1.2.2"))
    assert sandbox.wait_until(lambda: rolled_out(sandbox, "api"), timeout=60)
    await run.step(RolloutRestart, {"namespace": NS, "name": "api"})
    assert sandbox.wait_until(lambda: rolled_out(sandbox, "api"), timeout=60)
    await run.step(WaitRollout, {"namespace": NS, "name": "api", **wait})
    await run.step(Scale, {"namespace": NS, "name": "api", "delta": 1})
    sandbox.apply(deployment(NS, "api", replicas=2, image="registry.example/api:1.3.0"))
    assert sandbox.wait_until(lambda: rolled_out(sandbox, "api"), timeout=60)
    await run.step(Rollback, {"namespace": NS, "name": "api"})
    assert sandbox.wait_until(lambda: rolled_out(sandbox, "api") and pods_settled(sandbox), timeout=60)
    await run.step(DeletePod, {"namespace": NS, "selector": "app=api", "count": 1})

    # Workloads the sandbox stores but does not reconcile: the StatefulSet branch of scale, and
    # delete_pod annotating a StatefulSet's or a DaemonSet's pod's owner.
    for kind, name in (("StatefulSet", "db"), ("DaemonSet", "agent")):
        owner = sandbox.apply(workload(kind, name))
        sandbox.apply(owned_pod(owner, f"{name}-0"))
        await run.step(DeletePod, {"namespace": NS, "name": f"{name}-0"}, step=f"delete-{name}-pod")
    await run.step(Scale, {"namespace": NS, "name": "db", "kind": "StatefulSet", "replicas": 3}, step="sts")

    sandbox.apply(configmap(NS, "flags", {"replica": "a"}))
    await run.step(PatchConfigMap, {"namespace": NS, "name": "flags", "data": {"replica": "b"}})

    sandbox.set_job_outcome(NS, "etl", "fail")
    sandbox.apply(job(NS, "etl", image="registry.example/etl:2.0", labels={"app": "etl"}))
    sandbox.set_job_outcome(NS, "etl-rerun", "succeed")
    assert sandbox.wait_until(lambda: job_failed(sandbox, "etl"), timeout=60)
    job_pod = {"namespace": NS, "selector": "job-name=etl", "count": 1}  # its owner is the Job
    await run.step(DeletePod, job_pod, step="delete-job-pod")
    rerun = await run.step(RerunJob, {"namespace": NS, "name": "etl"}, undo=False)
    await run.step(WaitJob, {"namespace": NS, "name": rerun.output["job"], **wait})
    assert rerun.checkpoint is not None
    await RerunJob.build(kube_clients).rollback(
        RollbackRequest(incident_id="inc-rbac", checkpoint=rerun.checkpoint)
    )
    sandbox.apply(cronjob(NS, "nightly", image="registry.example/etl:2.0", labels={"app": "etl"}))
    await run.step(TriggerCronJob, {"namespace": NS, "name": "nightly"})

    pod = sandbox.list_objects("v1", "Pod", NS, "app=api")[0]["metadata"]["name"]
    await run.fact(resource="deployment", name="api")
    await run.fact(resource="pods", name="api")
    await run.fact(resource="pods", selector="app=api")
    await run.fact(resource="events", name="api")
    await run.fact(resource="logs", name="api", previous=False)
    await run.fact(resource="logs", name=pod)
    await run.fact(resource="job", name="etl")
    await run.fact(resource="job", name="etl", latest_run=True)

    assert run.ran == kube_actions, "every registered Kubernetes action was run"
    resources = KubernetesFactParams.model_fields["resource"].annotation
    assert run.facts == set(get_args(resources)), "every kind of kubernetes fact was read"
    accesses = [r.access for r in sandbox.requests if r.access is not None]
    assert accesses and all(a.namespace == NS for a in accesses), "nothing cluster-wide is asked"
    assert [r.path for r in sandbox.requests if r.access is None] == [], "no discovery calls"
    called = {
        (a.api_group, a.resource + (f"/{a.subresource}" if a.subresource else ""), a.verb) for a in accesses
    }
    assert called == granted(rendered)


def test_the_role_is_bound_only_in_the_namespaces_the_policy_lets_remedium_act_in(
    rendered: list[dict[str, Any]],
) -> None:
    (role,) = by_kind(rendered, "ClusterRole")
    bindings = by_kind(rendered, "RoleBinding")
    assert not by_kind(rendered, "ClusterRoleBinding"), "no cluster-wide grant"
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "remedium-worker", "namespace": "remedium"}
        ]
    policy_map = next(
        d for d in by_kind(rendered, "ConfigMap") if d["metadata"]["name"].startswith("remedium-policy")
    )
    policy = yaml.safe_load(policy_map["data"]["policy.yaml"])
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(
        policy["blast_radius"]["namespaces"]
    )
    for shipped in (OVERLAY / "app/policy.yaml", REPO / "deploy/kubernetes/base/policy.yaml"):
        assert validate_policy_file(shipped) == [], shipped  # the worker would refuse to start otherwise
