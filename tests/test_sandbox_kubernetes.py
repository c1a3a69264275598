"""The Kubernetes sandbox, driven only through the real `kubernetes` client as remediation code drives it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import urllib3
from kubernetes.client import ApiException, AppsV1Api, CoreV1Api

from remedium.demo.sandbox.kubernetes import KubernetesSandbox, configmap, cronjob, deployment, job
from tests.support import VECTORS_DIR

NS = "payments"
REVISION = "deployment.kubernetes.io/revision"
VECTORS = VECTORS_DIR / "kubernetes_client_request_vectors.json"
RESTART_PATCH = {
    "spec": {
        "template": {
            "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-22T20:28:32+00:00"}}
        }
    }
}
ROLLBACK_KEPT = {
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "{}")
    return body


def seeded(sandbox: KubernetesSandbox, apps: Any, name: str = "api", replicas: int = 2) -> None:
    sandbox.apply(deployment(NS, name, replicas=replicas, image="registry.example/api:1.2.2"))
    assert sandbox.wait_until(lambda: rollout_done(apps, name), 10), (
        "seeded deployment never became available"
    )


def replace_on_conflict(read: Any, replace: Any, *, replicas: int) -> tuple[Any, Any]:
    """Read-modify-write that races the controller's status writes, as on a real cluster:
    retried on 409 the way client-go's RetryOnConflict is. Returns (what was sent, the reply)."""
    for _ in range(50):
        current = read()
        current.spec.replicas = replicas
        try:
            return current, replace(current)
        except ApiException as exc:
            assert exc.status == 409, exc
    raise AssertionError("still conflicting after 50 attempts")


def rollout_done(apps: Any, name: str) -> bool:
    """kubectl's rollout-status rule (rollout_status.go)."""
    d = apps.read_namespaced_deployment(name, NS)
    s = d.status
    return (
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == d.spec.replicas
        and (s.replicas or 0) == (s.updated_replicas or 0)
        and (s.available_replicas or 0) == (s.updated_replicas or 0)
    )


def owned_replicasets(apps: Any, name: str) -> list[Any]:
    d = apps.read_namespaced_deployment(name, NS)
    selector = ",".join(f"{k}={v}" for k, v in d.spec.selector.match_labels.items())
    return sorted(
        (
            rs
            for rs in apps.list_namespaced_replica_set(NS, label_selector=selector).items
            if any(ref.controller and ref.uid == d.metadata.uid for ref in rs.metadata.owner_references or [])
        ),
        key=lambda rs: int(rs.metadata.annotations[REVISION]),
    )


def pods_of(core: Any, selector: str) -> list[Any]:
    return [
        p
        for p in core.list_namespaced_pod(NS, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


# ------------------------------------------------------------------ CRUD and errors


def test_crud_with_apiserver_status_objects(kube_apps: Any) -> None:
    created = kube_apps.create_namespaced_deployment(NS, deployment(NS, "web"))
    assert created.metadata.uid and created.metadata.generation == 1
    assert created.spec.strategy.rolling_update.max_surge == "25%"  # defaulted as the apiserver does
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    with pytest.raises(ApiException) as exists:
        kube_apps.create_namespaced_deployment(NS, deployment(NS, "web"))
    assert exists.value.status == 409
    assert status_of(exists.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "web" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
        "code": 409,
    }

    current, replaced = replace_on_conflict(
        lambda: kube_apps.read_namespaced_deployment("web", NS),
        lambda obj: kube_apps.replace_namespaced_deployment("web", NS, obj),
        replicas=3,
    )
    assert replaced.spec.replicas == 3 and replaced.metadata.generation == 2
    assert int(replaced.metadata.resource_version) > int(current.metadata.resource_version)

    current.spec.replicas = 4  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        kube_apps.replace_namespaced_deployment("web", NS, current)
    assert stale.value.status == 409
    assert status_of(stale.value)["reason"] == "Conflict"
    assert status_of(stale.value)["message"].startswith(
        'Operation cannot be fulfilled on deployments.apps "web"'
    )

    broken = deployment(NS, "broken")
    broken["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as bad:
        kube_apps.create_namespaced_deployment(NS, broken)
    body = status_of(bad.value)
    assert bad.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Deployment.apps "broken" is invalid: spec.template.metadata.labels')
    assert body["details"]["kind"] == "Deployment"
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"

    names = [d.metadata.name for d in kube_apps.list_namespaced_deployment(NS).items]
    assert names == ["web"]
    deleted = kube_apps.delete_namespaced_deployment("web", NS)  # the client types this as a plain object
    assert deleted["status"] == "Success" and deleted["details"]["uid"] == created.metadata.uid
    with pytest.raises(ApiException) as gone:
        kube_apps.read_namespaced_deployment("web", NS)
    assert status_of(gone.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "web" not found',
        "reason": "NotFound",
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
        "code": 404,
    }


def test_bad_or_missing_token_is_401(kube_sandbox: KubernetesSandbox) -> None:
    for token in ("wrong-token", ""):
        config = kube_sandbox.configuration()
        config.api_key = {"authorization": token} if token else {}
        with kubernetes.client.ApiClient(config) as client, pytest.raises(ApiException) as denied:
            CoreV1Api(client).list_namespaced_pod(NS)
        assert denied.value.status == 401
        assert status_of(denied.value) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }


def test_configmap_crud(kube_core: Any) -> None:
    kube_core.create_namespaced_config_map(NS, configmap(NS, "flags", {"feature_x": "on"}))
    patched = kube_core.patch_namespaced_config_map(
        "flags", NS, {"data": {"feature_x": None, "feature_y": "off"}}
    )
    assert patched.data == {"feature_y": "off"}
    with pytest.raises(ApiException) as bad:
        kube_core.create_namespaced_config_map(NS, {"metadata": {"name": "Bad_Name"}, "data": {}})
    assert bad.value.status == 422
    assert (
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"'
        in status_of(bad.value)["message"]
    )


# ------------------------------------------------------------------ patch types, dry run, selectors


def test_each_patch_content_type(kube_sandbox: KubernetesSandbox, kube_apps: Any) -> None:
    kube_sandbox.apply(deployment(NS, "api", labels={"app": "api"}))
    kube_apps.patch_namespaced_deployment("api", NS, {"metadata": {"labels": {"tier": "backend"}}})

    strategic = kube_apps.patch_namespaced_deployment(
        "api",
        NS,
        {
            "metadata": {"labels": {"tier": None}},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api", "env": [{"name": "MODE", "value": "safe"}]}]}
                }
            },
        },
    )
    container = strategic.spec.template.spec.containers[0]
    assert strategic.metadata.labels == {"app": "api"}
    assert container.image == "registry.local/app:1.0" and container.env[0].value == "safe"  # merged by name

    merged = kube_apps.patch_namespaced_deployment(
        "api",
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": "registry.local/app:2.0"}]}}
            }
        },
        _content_type="application/merge-patch+json",
    )
    assert merged.spec.template.spec.containers[0].env is None  # RFC 7386 replaces the list

    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/team", "value": "payments"},
        {"op": "remove", "path": "/metadata/labels/app"},
    ]
    jsonpatched = kube_apps.patch_namespaced_deployment("api", NS, ops)
    assert jsonpatched.spec.replicas == 3 and jsonpatched.metadata.labels["team"] == "payments"
    assert "app" not in jsonpatched.metadata.labels

    with pytest.raises(ApiException) as failed_test:
        kube_apps.patch_namespaced_deployment(
            "api", NS, [{"op": "test", "path": "/spec/replicas", "value": 9}]
        )
    assert failed_test.value.status == 422
    with pytest.raises(ApiException) as apply:
        kube_apps.patch_namespaced_deployment(
            "api", NS, {"spec": {}}, _content_type="application/apply-patch+yaml"
        )
    assert apply.value.status == 415 and status_of(apply.value)["reason"] == "UnsupportedMediaType"

    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}
    with pytest.raises(ApiException) as conflict:
        kube_apps.patch_namespaced_deployment("api", NS, stale)
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"


def test_dry_run_returns_the_would_be_object_and_persists_nothing(
    kube_sandbox: KubernetesSandbox, kube_apps: Any
) -> None:
    preview = kube_apps.create_namespaced_deployment(NS, deployment(NS, "ghost"), dry_run="All")
    assert preview.metadata.uid and preview.metadata.resource_version is None
    assert kube_sandbox.get("apps/v1", "Deployment", NS, "ghost") is None

    kube_sandbox.apply(deployment(NS, "api"))
    before = kube_apps.read_namespaced_deployment("api", NS)
    would = kube_apps.patch_namespaced_deployment("api", NS, {"spec": {"replicas": 7}}, dry_run="All")
    assert would.spec.replicas == 7 and would.metadata.generation == before.metadata.generation + 1
    scaled = kube_apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 9}}, dry_run="All")
    assert scaled.spec.replicas == 9
    kube_apps.delete_namespaced_deployment("api", NS, dry_run="All")
    after = kube_apps.read_namespaced_deployment("api", NS)
    assert after.spec.replicas == 2 and after.metadata.generation == before.metadata.generation

    with pytest.raises(ApiException) as invalid_dry_run:
        kube_apps.create_namespaced_deployment(NS, deployment(NS, "x"), dry_run="Sometimes")
    assert invalid_dry_run.value.status == 400


def test_label_and_field_selectors(kube_sandbox: KubernetesSandbox, kube_core: Any) -> None:
    labelled = {
        "a": {"app": "api", "tier": "web"},
        "b": {"app": "api", "tier": "db"},
        "c": {"app": "etl", "canary": "true"},
        "d": {"app": "etl"},
    }
    for name, labels in labelled.items():
        kube_core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str = "", fields: str = "") -> list[str]:
        items = kube_core.list_namespaced_config_map(NS, label_selector=selector, field_selector=fields).items
        return [cm.metadata.name for cm in items]

    assert names("app=api,tier!=db") == ["a"]
    assert names("tier in (web,db)") == ["a", "b"]
    assert names("app notin (api)") == ["c", "d"]
    assert names("!tier") == ["c", "d"]
    assert names("canary") == ["c"]
    assert names(fields="metadata.name=d") == ["d"]
    assert names("app=etl", fields="metadata.name!=d") == ["c"]
    with pytest.raises(ApiException) as unsupported:
        names(fields="spec.colour=red")
    assert unsupported.value.status == 400
    assert status_of(unsupported.value)["message"] == "field label not supported: spec.colour"
    listing = kube_core.list_namespaced_config_map(NS)
    assert listing.kind == "ConfigMapList" and int(listing.metadata.resource_version) > 0


# ------------------------------------------------------------------ rollouts


def test_rollout_restart_as_the_vector_sends_it_rolls_to_revision_2(
    kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any
) -> None:
    seeded(kube_sandbox, kube_apps)
    [first] = owned_replicasets(kube_apps, "api")
    old_pods = {p.metadata.name for p in pods_of(kube_core, "app=api")}

    vector = json.loads(VECTORS.read_text())["requests"][0]
    restarted = kube_apps.patch_namespaced_deployment("api", NS, json.loads(vector["body"]))
    assert restarted.metadata.generation == 2

    assert kube_sandbox.wait_until(lambda: rollout_done(kube_apps, "api"), 10)
    rs1, rs2 = owned_replicasets(kube_apps, "api")
    assert rs1.metadata.name == first.metadata.name and rs1.spec.replicas == 0
    assert rs2.metadata.annotations[REVISION] == "2" and rs2.spec.replicas == 2
    pod_hash = rs2.metadata.labels["pod-template-hash"]
    assert rs2.metadata.name == f"api-{pod_hash}"
    assert kube_sandbox.wait_until(lambda: len(pods_of(kube_core, "app=api")) == 2)
    new_pods = pods_of(kube_core, "app=api")
    assert {p.metadata.labels["pod-template-hash"] for p in new_pods} == {pod_hash}
    assert not old_pods & {p.metadata.name for p in new_pods}
    assert new_pods[0].metadata.owner_references[0].uid == rs2.metadata.uid
    d = kube_apps.read_namespaced_deployment("api", NS)
    assert d.metadata.annotations[REVISION] == "2" and d.status.observed_generation == 2
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert progressing.reason == "NewReplicaSetAvailable"
    scaling = [
        e.message
        for e in kube_core.list_namespaced_event(NS, field_selector="involvedObject.name=api").items
        if e.reason == "ScalingReplicaSet"
    ]
    assert f"Scaled up replica set {rs2.metadata.name} from 0 to 1" in scaling
    assert f"Scaled down replica set {rs1.metadata.name} from 1 to 0" in scaling


def test_rollback_reuses_the_old_replicaset_with_the_next_revision(
    kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any
) -> None:
    seeded(kube_sandbox, kube_apps)
    kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)
    assert kube_sandbox.wait_until(lambda: len(owned_replicasets(kube_apps, "api")) == 2)
    assert kube_sandbox.wait_until(lambda: rollout_done(kube_apps, "api"), 10)

    # kubectl rollout undo (rollback.go): previous revision's template, minus the hash label, as a JSON patch
    d = kube_apps.read_namespaced_deployment("api", NS)
    rs1, _ = owned_replicasets(kube_apps, "api")
    template = kube_apps.api_client.sanitize_for_serialization(rs1.spec.template)
    del template["metadata"]["labels"]["pod-template-hash"]
    annotations = {k: v for k, v in rs1.metadata.annotations.items() if k not in ROLLBACK_KEPT}
    annotations.update({k: v for k, v in d.metadata.annotations.items() if k in ROLLBACK_KEPT})
    kube_apps.patch_namespaced_deployment(
        "api",
        NS,
        [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ],
    )
    assert kube_sandbox.wait_until(lambda: rollout_done(kube_apps, "api"), 10)
    replicasets = owned_replicasets(kube_apps, "api")
    assert len(replicasets) == 2  # no third ReplicaSet: the old one came back
    rs2, reused = replicasets
    assert reused.metadata.uid == rs1.metadata.uid
    assert reused.metadata.annotations[REVISION] == "3"
    assert reused.metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert reused.spec.replicas == 2 and rs2.spec.replicas == 0
    assert kube_apps.read_namespaced_deployment("api", NS).metadata.annotations[REVISION] == "3"
    assert kube_sandbox.wait_until(lambda: len(pods_of(kube_core, "app=api")) == 2)
    hashes = {p.metadata.labels["pod-template-hash"] for p in pods_of(kube_core, "app=api")}
    assert hashes == {rs1.metadata.labels["pod-template-hash"]}


def test_scale_subresource(kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any) -> None:
    seeded(kube_sandbox, kube_apps)
    scale = kube_apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 5}})
    assert (scale.kind, scale.api_version, scale.spec.replicas) == ("Scale", "autoscaling/v1", 5)
    assert scale.status.selector == "app=api"
    assert kube_sandbox.wait_until(lambda: len(pods_of(kube_core, "app=api")) == 5)
    assert kube_sandbox.wait_until(
        lambda: kube_apps.read_namespaced_deployment_scale("api", NS).status.replicas == 5
    )

    _, replaced = replace_on_conflict(
        lambda: kube_apps.read_namespaced_deployment_scale("api", NS),
        lambda obj: kube_apps.replace_namespaced_deployment_scale("api", NS, obj),
        replicas=1,
    )
    assert replaced.spec.replicas == 1
    assert kube_sandbox.wait_until(lambda: len(pods_of(kube_core, "app=api")) == 1)
    assert len(owned_replicasets(kube_apps, "api")) == 1  # scaling is not a new revision
    with pytest.raises(ApiException) as negative:
        kube_apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": -1}})
    assert negative.value.status == 422


# ------------------------------------------------------------------ pod behaviour and logs


def test_crashloop_oomkilled_and_imagepull_show_in_pod_status(
    kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any
) -> None:
    for name, behaviour in (("crashy", "crashloop"), ("hungry", "oomkilled"), ("missing", "imagepull")):
        kube_sandbox.set_pod_behaviour(NS, name, behaviour, revision=1)
        kube_sandbox.apply(deployment(NS, name, replicas=1))

    def container(app: str) -> Any:
        pods = pods_of(kube_core, f"app={app}")
        statuses = pods[0].status.container_statuses if pods else None
        return statuses[0] if statuses else None

    seen: list[Any] = []

    def crashlooping() -> bool:
        seen[:] = [container("crashy")]
        return seen[0] is not None and seen[0].restart_count >= 2 and seen[0].state.waiting is not None

    assert kube_sandbox.wait_until(crashlooping)
    crashed = seen[0]
    assert crashed.ready is False and crashed.state.waiting.reason == "CrashLoopBackOff"
    assert crashed.last_state.terminated.exit_code == 1
    pod = pods_of(kube_core, "app=crashy")[0]
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert pod.status.phase == "Running" and ready.status == "False" and ready.reason == "ContainersNotReady"
    backoffs = [
        e
        for e in kube_core.list_namespaced_event(
            NS, field_selector=f"involvedObject.name={pod.metadata.name}"
        ).items
        if e.reason == "BackOff"
    ]
    assert backoffs and backoffs[0].type == "Warning"

    assert kube_sandbox.wait_until(
        lambda: (c := container("hungry")) is not None and c.last_state.terminated is not None
    )
    oom = container("hungry").last_state.terminated
    assert (oom.reason, oom.exit_code) == ("OOMKilled", 137)

    assert kube_sandbox.wait_until(
        lambda: (c := container("missing")) is not None and c.state.waiting.reason == "ImagePullBackOff"
    )
    assert pods_of(kube_core, "app=missing")[0].status.phase == "Pending"

    d = kube_apps.read_namespaced_deployment("crashy", NS)
    available = next(c for c in d.status.conditions if c.type == "Available")
    assert available.status == "False" and d.status.unavailable_replicas == 1


def test_restart_recovers_when_only_revision_1_crashloops(
    kube_sandbox: KubernetesSandbox, kube_apps: Any
) -> None:
    kube_sandbox.set_pod_behaviour(NS, "api", "crashloop", revision=1)
    kube_sandbox.set_pod_behaviour(NS, "api", "ready", revision=2)
    kube_sandbox.apply(deployment(NS, "api"))
    assert kube_sandbox.wait_until(
        lambda: kube_apps.read_namespaced_deployment("api", NS).status.replicas == 2
    )
    assert not kube_apps.read_namespaced_deployment("api", NS).status.available_replicas

    kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)
    assert kube_sandbox.wait_until(lambda: rollout_done(kube_apps, "api"), 10)
    assert kube_apps.read_namespaced_deployment("api", NS).status.available_replicas == 2


def test_a_worse_revision_stalls_the_rollout_until_the_progress_deadline(
    kube_sandbox: KubernetesSandbox, kube_apps: Any
) -> None:
    kube_sandbox.set_pod_behaviour(NS, "api", "crashloop", revision=2)
    manifest = deployment(NS, "api")
    manifest["spec"]["progressDeadlineSeconds"] = 1
    kube_sandbox.apply(manifest)
    assert kube_sandbox.wait_until(lambda: rollout_done(kube_apps, "api"), 10)
    kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)

    def progressing_reason() -> str:
        conditions = kube_apps.read_namespaced_deployment("api", NS).status.conditions or []
        return next((c.reason for c in conditions if c.type == "Progressing"), "")

    assert kube_sandbox.wait_until(lambda: progressing_reason() == "ProgressDeadlineExceeded", 10)
    d = kube_apps.read_namespaced_deployment("api", NS)
    assert d.status.available_replicas == 2  # the old pods keep serving (maxUnavailable 25% of 2 is 0)
    assert d.status.updated_replicas == 1  # one surge pod, crashlooping
    assert not rollout_done(kube_apps, "api")


def test_pod_logs_current_previous_and_tail(
    kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any
) -> None:
    lines = ["boot", "connecting to db", "panic: connection refused"]
    kube_sandbox.set_pod_behaviour(NS, "api", "crashloop")
    kube_sandbox.set_pod_logs(NS, "api", lines)
    kube_sandbox.apply(deployment(NS, "api", replicas=1))
    assert kube_sandbox.wait_until(
        lambda: (
            bool(pods_of(kube_core, "app=api"))
            and (pods_of(kube_core, "app=api")[0].status.container_statuses or [None])[0] is not None
            and pods_of(kube_core, "app=api")[0].status.container_statuses[0].restart_count >= 1
        )
    )
    name = pods_of(kube_core, "app=api")[0].metadata.name
    previous = kube_core.read_namespaced_pod_log(name, NS, container="api", previous=True)
    assert previous == "boot\nconnecting to db\npanic: connection refused\n"
    tail = kube_core.read_namespaced_pod_log(name, NS, container="api", tail_lines=1, timestamps=True)
    stamp, _, text = tail.strip().partition(" ")
    assert text == "panic: connection refused" and stamp.endswith("Z") and "T" in stamp
    # exactly the request the vector shows
    kube_core.read_namespaced_pod_log(
        name, NS, container="api", previous=True, since_seconds=600, tail_lines=100, timestamps=True
    )
    logged = kube_sandbox.requests_to("GET", r"/log$")[-1]
    assert logged.query == {
        "container": "api",
        "previous": "true",
        "sinceSeconds": "600",
        "tailLines": "100",
        "timestamps": "true",
    }

    kube_sandbox.apply(deployment(NS, "fresh", replicas=1))
    assert kube_sandbox.wait_until(
        lambda: any(p.status.phase == "Running" for p in pods_of(kube_core, "app=fresh"))
    )
    fresh = pods_of(kube_core, "app=fresh")[0].metadata.name
    assert "listening" in kube_core.read_namespaced_pod_log(fresh, NS)
    with pytest.raises(ApiException) as no_previous:
        kube_core.read_namespaced_pod_log(fresh, NS, container="fresh", previous=True)
    assert no_previous.value.status == 400
    assert status_of(no_previous.value)["message"] == (
        f'previous terminated container "fresh" in pod "{fresh}" not found'
    )


def test_deleting_a_pod_gets_it_replaced(
    kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any
) -> None:
    seeded(kube_sandbox, kube_apps)
    victim = pods_of(kube_core, "app=api")[0].metadata.name
    deleted = kube_core.delete_namespaced_pod(victim, NS, grace_period_seconds=30)
    assert deleted.metadata.name == victim and deleted.metadata.deletion_timestamp is not None
    assert kube_sandbox.wait_until(
        lambda: (
            victim not in {p.metadata.name for p in kube_core.list_namespaced_pod(NS).items}
            and len(pods_of(kube_core, "app=api")) == 2
        )
    )
    with pytest.raises(ApiException) as gone:
        kube_core.delete_namespaced_pod(victim, NS)
    assert status_of(gone.value)["message"] == f'pods "{victim}" not found'
    assert "group" not in status_of(gone.value)["details"]


# ------------------------------------------------------------------ jobs and cronjobs


def test_job_failure_then_rerun_with_stripped_selector(
    kube_sandbox: KubernetesSandbox, kube_batch: Any, kube_core: Any
) -> None:
    kube_sandbox.set_job_outcome("batch", "nightly-etl-29", "fail")
    kube_sandbox.apply(
        job("batch", "nightly-etl-29000000", image="registry.example/etl:2.0", backoff_limit=1)
    )

    def condition(name: str) -> str:
        conditions = kube_batch.read_namespaced_job(name, "batch").status.conditions or []
        return next(
            (c.type for c in conditions if c.type in ("Complete", "Failed") and c.status == "True"), ""
        )

    assert kube_sandbox.wait_until(lambda: condition("nightly-etl-29000000") == "Failed")
    failed = kube_batch.read_namespaced_job("nightly-etl-29000000", "batch")
    assert failed.status.failed == 2 and failed.status.start_time is not None
    assert next(c for c in failed.status.conditions if c.type == "Failed").reason == "BackoffLimitExceeded"
    uid = failed.metadata.uid
    assert failed.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    labels = failed.spec.template.metadata.labels
    assert (
        labels["controller-uid"] == uid and labels["batch.kubernetes.io/job-name"] == "nightly-etl-29000000"
    )
    reasons = {e.reason for e in kube_core.list_namespaced_event("batch").items}
    assert {"SuccessfulCreate", "BackoffLimitExceeded"} <= reasons

    copied = kube_batch.api_client.sanitize_for_serialization(failed)
    for field in ("uid", "resourceVersion", "creationTimestamp", "name"):
        copied["metadata"].pop(field, None)
    copied.pop("status")
    copied["metadata"]["generateName"] = "nightly-etl-rerun-"
    with pytest.raises(ApiException) as refused:
        kube_batch.create_namespaced_job("batch", copied)
    assert (
        refused.value.status == 422 and "`selector` not auto-generated" in status_of(refused.value)["message"]
    )

    generated = (
        "controller-uid",
        "job-name",
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-name",
    )
    copied["spec"].pop("selector")
    copied["spec"].pop("manualSelector", None)
    for key in generated:
        copied["metadata"]["labels"].pop(key, None)
        copied["spec"]["template"]["metadata"]["labels"].pop(key, None)
    kube_sandbox.set_job_outcome("batch", "nightly-etl-rerun-", "succeed")
    rerun = kube_batch.create_namespaced_job("batch", copied)
    assert rerun.metadata.name.startswith("nightly-etl-rerun-") and rerun.metadata.uid != uid
    assert kube_sandbox.wait_until(lambda: condition(rerun.metadata.name) == "Complete")
    done = kube_batch.read_namespaced_job(rerun.metadata.name, "batch")
    assert done.status.succeeded == 1 and done.status.completion_time is not None

    pods = kube_core.list_namespaced_pod("batch", label_selector=f"job-name={rerun.metadata.name}").items
    assert [p.status.phase for p in pods] == ["Succeeded"]
    kube_batch.delete_namespaced_job(rerun.metadata.name, "batch", propagation_policy="Background")
    assert kube_sandbox.wait_until(
        lambda: (
            not kube_core.list_namespaced_pod("batch", label_selector=f"job-name={rerun.metadata.name}").items
        )
    )
    kube_batch.delete_namespaced_job("nightly-etl-29000000", "batch")  # batch/v1 default: orphan the pods
    kube_sandbox.step()
    orphans = kube_core.list_namespaced_pod("batch", label_selector="job-name=nightly-etl-29000000").items
    assert len(orphans) == 2 and all(not p.metadata.owner_references for p in orphans)


def test_manual_cronjob_trigger_runs_a_job_owned_by_the_cronjob(
    kube_sandbox: KubernetesSandbox, kube_batch: Any
) -> None:
    kube_batch.create_namespaced_cron_job(
        "batch", cronjob("batch", "nightly-etl", image="registry.example/etl:2.0")
    )
    cj = kube_batch.read_namespaced_cron_job("nightly-etl", "batch")
    assert cj.spec.concurrency_policy == "Allow" and cj.spec.job_template.spec.backoff_limit == 2
    body = json.loads(json.loads(VECTORS.read_text())["requests"][11]["body"])
    body["metadata"]["ownerReferences"][0]["uid"] = cj.metadata.uid
    created = kube_batch.create_namespaced_job("batch", body)
    assert created.metadata.annotations["cronjob.kubernetes.io/instantiate"] == "manual"
    assert kube_sandbox.wait_until(
        lambda: kube_batch.read_namespaced_job(created.metadata.name, "batch").status.succeeded == 1
    )
    assert [
        j.metadata.name for j in kube_batch.list_namespaced_job("batch", label_selector="app=etl").items
    ] == ["nightly-etl-manual-001"]
    kube_batch.delete_namespaced_cron_job("nightly-etl", "batch", propagation_policy="Foreground")
    assert kube_sandbox.wait_until(lambda: not kube_batch.list_namespaced_job("batch").items)
    assert kube_sandbox.wait_until(lambda: not kube_batch.list_namespaced_cron_job("batch").items)


# ------------------------------------------------------------------ faults, outages, request log


def test_fault_injection_answers_with_status_bodies(kube_sandbox: KubernetesSandbox, kube_apps: Any) -> None:
    kube_sandbox.apply(deployment(NS, "api"))
    kube_sandbox.fail_next("PATCH", r"/deployments/api$", 409, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as conflict:
            kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)
        assert conflict.value.status == 409
        assert status_of(conflict.value)["details"] == {"name": "api", "group": "apps", "kind": "deployments"}
    kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)  # the third goes through

    kube_sandbox.fail_next("*", r"/deployments/api$", 503)
    with pytest.raises(ApiException) as unavailable:
        kube_apps.read_namespaced_deployment("api", NS)
    assert unavailable.value.status == 503 and status_of(unavailable.value)["reason"] == "ServiceUnavailable"

    kube_sandbox.fail_next("GET", r"/deployments/api$", 403)
    with pytest.raises(ApiException) as injected:
        kube_apps.read_namespaced_deployment("api", NS)
    assert status_of(injected.value)["message"] == (
        'deployments.apps "api" is forbidden: User "system:serviceaccount:remedium:remedium" cannot get '
        'resource "deployments" in API group "apps" in the namespace "payments"'
    )

    kube_sandbox.forbid("patch", "deployments/scale", NS)
    with pytest.raises(ApiException) as rbac:
        kube_apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 3}})
    assert rbac.value.status == 403 and status_of(rbac.value)["reason"] == "Forbidden"
    assert kube_apps.read_namespaced_deployment("api", NS).spec.replicas == 2


def test_take_down_and_bring_up_on_the_same_port(kube_sandbox: KubernetesSandbox, kube_apps: Any) -> None:
    seeded(kube_sandbox, kube_apps)
    url = kube_sandbox.url
    kube_sandbox.take_down()
    with pytest.raises(urllib3.exceptions.HTTPError):
        kube_apps.read_namespaced_deployment("api", NS)
    kube_sandbox.bring_up()
    assert kube_sandbox.url == url
    assert kube_apps.read_namespaced_deployment("api", NS).status.available_replicas == 2


def test_request_log_matches_the_client_vectors(kube_sandbox: KubernetesSandbox, kube_apps: Any) -> None:
    seeded(kube_sandbox, kube_apps)
    vectors = json.loads(VECTORS.read_text())["requests"]
    kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)
    kube_apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 5}})
    patches = kube_sandbox.requests_to("PATCH", r"/deployments/api")
    for recorded, vector in zip(patches, (vectors[0], vectors[5]), strict=True):
        assert recorded.path == vector["path"]
        assert recorded.content_type == vector["headers"]["Content-Type"]
        assert recorded.body == json.loads(vector["body"])
        assert recorded.status == vector["status"]


def test_kubeconfig_discovery_and_async_use(kube_sandbox: KubernetesSandbox, tmp_path: Path) -> None:
    path = kube_sandbox.write_kubeconfig(tmp_path / "kubeconfig")
    load: Any = kubernetes.config.new_client_from_config
    with load(config_file=str(path), context="remedium-sandbox") as client:
        assert kubernetes.client.VersionApi(client).get_code().git_version.startswith("v1.")
        assert kubernetes.client.CoreApi(client).get_api_versions().versions == ["v1"]
        groups = {g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
        assert {"apps", "batch"} <= groups
        resources = {r.name for r in AppsV1Api(client).get_api_resources().resources}
        assert {"deployments", "deployments/scale", "replicasets"} <= resources

        async def from_async_code() -> list[Any]:
            api: Any = CoreV1Api(client)
            items = (await asyncio.to_thread(api.list_namespaced_pod, NS)).items
            return [p.metadata.name for p in items]

        assert asyncio.run(from_async_code()) == []


# ------------------------------------------------------------------ shapes against the client's models


def unknown_fields(data: Any, type_name: str, path: str = "") -> list[str]:
    """JSON keys that the client's generated model for `type_name` does not know (it would drop them)."""
    if data is None:
        return []
    if type_name.startswith("List["):
        return [
            u for i, item in enumerate(data) for u in unknown_fields(item, type_name[5:-1], f"{path}[{i}]")
        ]
    if type_name.startswith("Dict["):
        inner = type_name[5:-1].split(", ", 1)[1]
        return [u for k, v in data.items() for u in unknown_fields(v, inner, f"{path}.{k}")]
    model = getattr(kubernetes.client.models, type_name, None)
    if model is None:
        return []  # str, int, bool, datetime, object
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    found = []
    for key, value in data.items():
        if key not in by_json:
            found.append(f"{path}.{key}")
        else:
            found.extend(unknown_fields(value, model.openapi_types[by_json[key]], f"{path}.{key}"))
    return found


def test_every_returned_shape_is_known_to_the_client_models(
    kube_sandbox: KubernetesSandbox, kube_apps: Any, kube_core: Any, kube_batch: Any
) -> None:
    kube_sandbox.set_pod_behaviour(NS, "api", "crashloop", revision=2)
    seeded(kube_sandbox, kube_apps)
    kube_apps.patch_namespaced_deployment("api", NS, RESTART_PATCH)
    kube_sandbox.apply(cronjob("batch", "nightly"))
    kube_sandbox.apply(job("batch", "once"))
    kube_sandbox.apply(configmap(NS, "flags", {"a": "b"}))
    assert kube_sandbox.wait_until(
        lambda: any(
            (p.status.container_statuses or [None])[0] is not None
            and p.status.container_statuses[0].restart_count > 0
            for p in pods_of(kube_core, "app=api")
        )
    )
    assert kube_sandbox.wait_until(
        lambda: kube_batch.read_namespaced_job("once", "batch").status.succeeded == 1
    )

    def raw(call: Any, *args: Any, **kwargs: Any) -> Any:
        return json.loads(call(*args, _preload_content=False, **kwargs).data)

    checks = [
        (raw(kube_apps.read_namespaced_deployment, "api", NS), "V1Deployment"),
        (raw(kube_apps.list_namespaced_deployment, NS), "V1DeploymentList"),
        (raw(kube_apps.list_namespaced_replica_set, NS), "V1ReplicaSetList"),
        (raw(kube_apps.read_namespaced_deployment_scale, "api", NS), "V1Scale"),
        (raw(kube_core.list_namespaced_pod, NS), "V1PodList"),
        (raw(kube_core.list_namespaced_pod, "batch"), "V1PodList"),
        (raw(kube_core.list_namespaced_event, NS), "CoreV1EventList"),
        (raw(kube_core.list_namespaced_config_map, NS), "V1ConfigMapList"),
        (raw(kube_batch.list_namespaced_job, "batch"), "V1JobList"),
        (raw(kube_batch.list_namespaced_cron_job, "batch"), "V1CronJobList"),
        (raw(kube_apps.delete_namespaced_deployment, "api", NS, dry_run="All"), "V1Status"),
    ]
    for data, model in checks:
        assert unknown_fields(data, model) == [], model
        assert kube_apps.api_client.deserialize(json.dumps(data), model, "application/json") is not None
    with pytest.raises(ApiException) as missing:
        kube_apps.read_namespaced_deployment("nope", NS)
    assert unknown_fields(status_of(missing.value), "V1Status") == []
