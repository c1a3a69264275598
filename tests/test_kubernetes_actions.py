"""Kubernetes actions and the `kubernetes` diagnostic, through the action classes and the real client.

Each action is run as the workflow runs it (dry run, execute, a retried execute, rollback)
against the sandbox apiserver, and what it sent is compared with the captured kubectl /
client requests in the shared vectors.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.kubernetes import (
    DeletePod,
    KubernetesFacts,
    KubernetesSettings,
    PatchConfigMap,
    RerunJob,
    Rollback,
    RolloutRestart,
    Scale,
    TriggerCronJob,
    WaitJob,
    WaitRollout,
    kubernetes_api_client,
)
from remedium.bindings import params_of
from remedium.catalog import Action, Clients
from remedium.demo.sandbox.kubernetes import KubernetesSandbox, configmap, cronjob, deployment, job
from remedium.models import ActionRequest, ActionResult, RollbackRequest
from tests.support import VECTORS_DIR

NS = "payments"
REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
VECTORS = VECTORS_DIR / "kubernetes_client_request_vectors.json"
GENERATED = {
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
}

A = TypeVar("A", bound=Action[Any])


def vector(method: str, pattern: str, index: int = 0) -> dict[str, Any]:
    requests = json.loads(VECTORS.read_text())["requests"]
    found = [r for r in requests if r["method"] == method and re.search(pattern, r["path"])]
    return dict(found[index])


@pytest.fixture
async def clients(kube_sandbox: KubernetesSandbox) -> AsyncIterator[Clients]:
    async with httpx.AsyncClient() as http:
        yield Clients(http=http, kubernetes=kube_sandbox.api_client())


def request(action: str, params: dict[str, Any], step: str = "restart") -> ActionRequest:
    return ActionRequest(incident_id="inc-42", step_id=step, action=action, params=params)


async def dry(action: Action[Any], req: ActionRequest) -> Any:
    return await action.dry_run(req, params_of(action.params_model, req.params, action.name))


async def run(action: Action[Any], req: ActionRequest) -> ActionResult:
    return await action.execute(req, params_of(action.params_model, req.params, action.name))


async def undo(action: Action[Any], result: ActionResult) -> ActionResult:
    assert result.checkpoint is not None
    return await action.rollback(RollbackRequest(incident_id="inc-42", checkpoint=result.checkpoint))


def body(recorded: Any) -> Any:
    """The decoded JSON body the sandbox recorded."""
    return recorded.body


def get_deployment(sandbox: KubernetesSandbox, name: str = "api") -> dict[str, Any]:
    found = sandbox.get("apps/v1", "Deployment", NS, name)
    assert found is not None
    return found


def rolled_out(sandbox: KubernetesSandbox, name: str = "api") -> bool:
    d = get_deployment(sandbox, name)
    s = d.get("status") or {}
    want = d["spec"]["replicas"]
    return bool(
        s.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and s.get("updatedReplicas", 0) == want
        and s.get("replicas", 0) == want
        and s.get("availableReplicas", 0) == want
    )


def seed(sandbox: KubernetesSandbox, name: str = "api", image: str = "registry.example/api:1.2.2") -> None:
    sandbox.apply(deployment(NS, name, replicas=2, image=image))
    assert sandbox.wait_until(lambda: rolled_out(sandbox, name)), "seeded deployment never rolled out"


def template(sandbox: KubernetesSandbox, name: str = "api") -> dict[str, Any]:
    return dict(get_deployment(sandbox, name)["spec"]["template"])


# ------------------------------------------------------------------ rollout restart


async def test_rollout_restart_dry_run_execute_retry_rollback(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    seed(kube_sandbox)
    action = RolloutRestart.build(clients)
    before = get_deployment(kube_sandbox)
    req = request("kubernetes.rollout_restart", {"namespace": NS, "name": "api"})

    preview = await dry(action, req)
    assert preview.would_change and RESTARTED_AT in preview.diff
    assert preview.diff.startswith("--- deployment payments/api (current)")
    assert preview.scope is not None and preview.scope.labels == {"app": "api"}
    assert [r.query for r in kube_sandbox.requests_to("PATCH", "/deployments/api$")] == [{"dryRun": "All"}]
    assert get_deployment(kube_sandbox)["metadata"]["generation"] == before["metadata"]["generation"]

    result = await run(action, req)
    assert result.changed
    sent = kube_sandbox.requests_to("PATCH", "/deployments/api$")[-1]
    expected = vector("PATCH", "/deployments/api$")
    assert (
        sent.content_type == expected["headers"]["Content-Type"] == "application/strategic-merge-patch+json"
    )
    sent_body, expected_body = body(sent), json.loads(expected["body"])
    stamp = sent_body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert datetime.fromisoformat(stamp).utcoffset() is not None  # RFC 3339 with an offset, like the vector
    expected_body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] = stamp
    assert sent_body["spec"] == expected_body["spec"]
    assert sent_body["metadata"] == {
        "annotations": {"remedium.io/last-step": "inc-42/restart", **_state(sent_body)}
    }
    assert kube_sandbox.wait_until(
        lambda: get_deployment(kube_sandbox)["metadata"]["annotations"][REVISION] == "2"
    )

    checkpoint = result.checkpoint
    assert checkpoint is not None
    assert checkpoint.captured["revision"] == 1
    assert checkpoint.captured["template"] == before["spec"]["template"]
    assert "revision 1" in checkpoint.undo and "kubectl rollout undo --to-revision=1" in checkpoint.undo

    patches = len(kube_sandbox.requests_to("PATCH", "/deployments/api$"))
    again = await run(action, req)
    assert not again.changed and again.checkpoint == checkpoint
    assert len(kube_sandbox.requests_to("PATCH", "/deployments/api$")) == patches
    generation = get_deployment(kube_sandbox)["metadata"]["generation"]

    waited = await run(
        WaitRollout.build(clients),
        request(
            "kubernetes.wait_rollout", {"namespace": NS, "name": "api", "timeout": "10s", "poll": "50ms"}
        ),
    )
    assert waited.output["state"] == "complete" and waited.output["status"]["revision"] == 2

    rolled = await undo(action, result)
    assert rolled.changed
    undo_sent = kube_sandbox.requests_to("PATCH", "/deployments/api$")[-1]
    assert undo_sent.content_type == "application/json-patch+json"
    ops = body(undo_sent)
    expected_ops = json.loads(vector("PATCH", "/deployments/api$", 2)["body"])
    assert [(o["op"], o["path"]) for o in ops] == [(o["op"], o["path"]) for o in expected_ops]
    assert ops[0]["value"] == before["spec"]["template"]  # the RS's template without pod-template-hash
    assert "pod-template-hash" not in ops[0]["value"]["metadata"]["labels"]
    assert kube_sandbox.wait_until(lambda: rolled_out(kube_sandbox))
    after = get_deployment(kube_sandbox)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["annotations"][REVISION] == "3"  # kubectl: revision 1's RS comes back as 3
    assert after["metadata"]["generation"] == generation + 1

    twice = await undo(action, result)
    assert not twice.changed


def _state(patch: dict[str, Any]) -> dict[str, str]:
    notes = patch["metadata"]["annotations"]
    return {k: v for k, v in notes.items() if k == "remedium.io/last-step-state"}


async def test_restart_refuses_a_paused_deployment(kube_sandbox: KubernetesSandbox, clients: Clients) -> None:
    paused = deployment(NS, "api")
    paused["spec"]["paused"] = True
    kube_sandbox.apply(paused)
    with pytest.raises(ApplicationError) as refused:
        await run(
            RolloutRestart.build(clients),
            request("kubernetes.rollout_restart", {"namespace": NS, "name": "api"}),
        )
    assert refused.value.non_retryable and refused.value.type == "KubernetesPaused"
    assert "paused" in refused.value.message


# ------------------------------------------------------------------ scale


async def test_scale_dry_run_delta_retry_rollback(kube_sandbox: KubernetesSandbox, clients: Clients) -> None:
    seed(kube_sandbox)
    action = Scale.build(clients)

    same = await dry(
        action, request("kubernetes.scale", {"namespace": NS, "name": "api", "replicas": 2}, "s0")
    )
    assert not same.would_change and same.diff == ""

    req = request("kubernetes.scale", {"namespace": NS, "name": "api", "delta": 3}, "scale")
    preview = await dry(action, req)
    assert preview.would_change and "-  replicas: 2\n+  replicas: 5" in preview.diff
    assert preview.scope is not None and (preview.scope.replicas_before, preview.scope.replicas_after) == (
        2,
        5,
    )
    assert get_deployment(kube_sandbox)["spec"]["replicas"] == 2

    result = await run(action, req)
    assert result.changed and get_deployment(kube_sandbox)["spec"]["replicas"] == 5
    sent = kube_sandbox.requests_to("PATCH", "/deployments/api/scale$")[-1]
    expected = vector("PATCH", "/scale$")
    assert (sent.query, sent.content_type, body(sent)) == (
        {},
        expected["headers"]["Content-Type"],
        json.loads(expected["body"]),
    )
    assert result.checkpoint is not None
    assert result.checkpoint.captured == {"kind": "Deployment", "namespace": NS, "name": "api", "replicas": 2}
    assert result.checkpoint.undo == "scale deployment payments/api back to 2 replicas"

    again = await run(action, req)  # a retried delta must not add 3 more
    assert not again.changed and get_deployment(kube_sandbox)["spec"]["replicas"] == 5
    assert again.checkpoint == result.checkpoint

    back = await undo(action, result)
    assert back.changed and get_deployment(kube_sandbox)["spec"]["replicas"] == 2
    assert not (await undo(action, result)).changed


# ------------------------------------------------------------------ rollback


async def test_rollback_to_previous_revision_and_forward_again(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    seed(kube_sandbox, image="registry.example/api:1.2.2")
    good = template(kube_sandbox)
    update = deployment(NS, "api", replicas=2, image="registry.example/api:1.3.0")
    kube_sandbox.apply(update)
    assert kube_sandbox.wait_until(lambda: rolled_out(kube_sandbox))
    bad = template(kube_sandbox)
    action = Rollback.build(clients)
    req = request("kubernetes.rollback", {"namespace": NS, "name": "api"}, "rollback")

    preview = await dry(action, req)
    assert preview.would_change
    assert re.search(r"^-\s+- image: registry.example/api:1.3.0$", preview.diff, re.M)
    assert re.search(r"^\+\s+- image: registry.example/api:1.2.2$", preview.diff, re.M)
    assert template(kube_sandbox) == bad

    rs_list = kube_sandbox.requests_to("GET", "/replicasets$")[-1]
    assert rs_list.query == {"labelSelector": "app=api"}  # as in the vector
    result = await run(action, req)
    assert result.changed and template(kube_sandbox) == good
    assert result.checkpoint is not None and result.checkpoint.captured["revision"] == 2
    assert result.checkpoint.captured["template"] == bad
    assert kube_sandbox.wait_until(lambda: rolled_out(kube_sandbox))

    patches = len(kube_sandbox.requests_to("PATCH", "/deployments/api$"))
    again = await run(action, req)
    assert not again.changed and len(kube_sandbox.requests_to("PATCH", "/deployments/api$")) == patches
    assert again.checkpoint is not None and again.checkpoint.captured["template"] == bad

    forward = await undo(action, result)
    assert forward.changed and template(kube_sandbox) == bad
    assert not (await undo(action, result)).changed


# ------------------------------------------------------------------ delete pod


def crashlooping(sandbox: KubernetesSandbox) -> list[dict[str, Any]]:
    return [
        p
        for p in sandbox.list_objects("v1", "Pod", NS, "app=api")
        if not p["metadata"].get("deletionTimestamp")
        and any(
            ((c.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
            for c in (p.get("status") or {}).get("containerStatuses") or []
        )
    ]


async def test_delete_pod_by_selector_picks_the_unhealthy_one(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    seed(kube_sandbox)
    kube_sandbox.set_pod_behaviour(NS, "api", "crashloop", revision=2)
    kube_sandbox.apply(deployment(NS, "api", replicas=2, image="registry.example/api:1.3.0"))
    assert kube_sandbox.wait_until(
        lambda: len(crashlooping(kube_sandbox)) == 1
    )  # the surge pod; old ones stay
    victim_pod = crashlooping(kube_sandbox)[0]
    victim = victim_pod["metadata"]["name"]
    action = DeletePod.build(clients)
    req = request("kubernetes.delete_pod", {"namespace": NS, "selector": "app=api", "count": 1}, "kill")

    preview = await dry(action, req)
    assert preview.would_change and f"-  {victim}:" in preview.diff
    assert kube_sandbox.get("v1", "Pod", NS, victim) is not None
    assert kube_sandbox.requests_to("DELETE", f"/pods/{victim}$")[-1].query == {"dryRun": "All"}

    result = await run(action, req)
    assert result.changed and result.output["deleted"] == [victim]
    sent = kube_sandbox.requests_to("DELETE", f"/pods/{victim}$")[-1]
    assert sent.query == {} and body(sent)["preconditions"]["uid"] == victim_pod["metadata"]["uid"]
    assert kube_sandbox.wait_until(lambda: kube_sandbox.get("v1", "Pod", NS, victim) is None)

    deletes = len(kube_sandbox.requests_to("DELETE", "/pods/"))
    again = await run(action, req)
    assert not again.changed and len(kube_sandbox.requests_to("DELETE", "/pods/")) == deletes
    assert again.checkpoint == result.checkpoint

    assert result.checkpoint is not None
    owner = victim_pod["metadata"]["ownerReferences"][0]["name"]
    assert result.checkpoint.captured == {
        "namespace": NS,
        "pods": [{"name": victim, "uid": victim_pod["metadata"]["uid"], "owner": f"ReplicaSet/{owner}"}],
    }
    assert result.checkpoint.undo == (
        "nothing to restore: deleted pods are not brought back; "
        f"their controller (ReplicaSet/{owner}) recreates them"
    )
    rolled = await undo(action, result)
    assert not rolled.changed and rolled.summary == result.checkpoint.undo


async def test_delete_named_pod_with_grace_period_like_the_vector(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    seed(kube_sandbox)
    name = kube_sandbox.list_objects("v1", "Pod", NS, "app=api")[0]["metadata"]["name"]
    action = DeletePod.build(clients)
    req = request(
        "kubernetes.delete_pod", {"namespace": NS, "name": name, "grace_period_seconds": 30}, "kill"
    )
    assert (await run(action, req)).changed
    assert kube_sandbox.requests_to("DELETE", f"/pods/{name}$")[-1].query == {"gracePeriodSeconds": "30"}
    assert kube_sandbox.wait_until(lambda: kube_sandbox.get("v1", "Pod", NS, name) is None)
    again = await run(action, req)  # the pod is gone; its ReplicaSet remembers this step
    assert not again.changed and again.output["deleted"] == [name]


# ------------------------------------------------------------------ configmap


async def test_patch_configmap_and_restore_previous_values(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    kube_sandbox.apply(configmap(NS, "flags", {"feature_x": "on", "keep": "1"}))
    action = PatchConfigMap.build(clients)
    req = request(
        "kubernetes.patch_configmap",
        {"namespace": NS, "name": "flags", "data": {"feature_x": "off", "new_key": "v"}},
        "flags",
    )

    preview = await dry(action, req)
    assert preview.would_change
    assert "-  feature_x: 'on'" in preview.diff and "+  feature_x: 'off'" in preview.diff
    assert "+  new_key: v" in preview.diff
    assert (kube_sandbox.get("v1", "ConfigMap", NS, "flags") or {})["data"]["feature_x"] == "on"

    result = await run(action, req)
    sent = kube_sandbox.requests_to("PATCH", "/configmaps/flags$")[-1]
    assert sent.content_type == "application/merge-patch+json"
    assert body(sent)["data"] == {"feature_x": "off", "new_key": "v"}
    data = (kube_sandbox.get("v1", "ConfigMap", NS, "flags") or {})["data"]
    assert result.changed and data == {"feature_x": "off", "keep": "1", "new_key": "v"}
    assert result.checkpoint is not None
    assert result.checkpoint.captured == {
        "namespace": NS,
        "name": "flags",
        "previous": {"feature_x": "on", "new_key": None},
    }
    assert result.checkpoint.undo == (
        "restore feature_x to the previous values and remove new_key (absent before) "
        "in configmap payments/flags"
    )

    again = await run(action, req)
    assert not again.changed and again.checkpoint == result.checkpoint

    restored = await undo(action, result)
    assert restored.changed
    assert (kube_sandbox.get("v1", "ConfigMap", NS, "flags") or {})["data"] == {
        "feature_x": "on",
        "keep": "1",
    }
    assert not (await undo(action, result)).changed


# ------------------------------------------------------------------ jobs


async def test_rerun_failed_job_then_wait_and_rollback(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    kube_sandbox.set_job_outcome(NS, "nightly-etl", "fail")
    kube_sandbox.apply(job(NS, "nightly-etl", image="registry.example/etl:2.0", labels={"app": "etl"}))
    waiter = WaitJob.build(clients)
    with pytest.raises(ApplicationError) as failed:
        await run(
            waiter,
            request("jobs.wait", {"namespace": NS, "name": "nightly-etl", "timeout": "10s", "poll": "50ms"}),
        )
    assert failed.value.type == "KubernetesJobFailed" and failed.value.non_retryable
    assert "BackoffLimitExceeded" in failed.value.message

    kube_sandbox.set_job_outcome(NS, "nightly-etl-rerun", "succeed")
    action = RerunJob.build(clients)
    req = request("jobs.rerun", {"namespace": NS, "name": "nightly-etl"}, "rerun")
    preview = await dry(action, req)
    assert preview.would_change and "+  name: nightly-etl-rerun-" in preview.diff
    assert len(kube_sandbox.list_objects("batch/v1", "Job", NS)) == 1

    result = await run(action, req)
    new = result.output["job"]
    assert result.changed and re.fullmatch(r"nightly-etl-rerun-[0-9a-f]{8}", new)
    sent = body(kube_sandbox.requests_to("POST", "/jobs$")[-1])
    expected = json.loads(vector("POST", "/jobs$", 0)["body"])
    assert "selector" not in sent["spec"] and "status" not in sent
    assert not GENERATED & set(sent["spec"]["template"]["metadata"]["labels"])
    assert not GENERATED & set(sent["metadata"].get("labels") or {})
    assert {k for k in sent["metadata"] if k not in ("name", "generateName")} <= {"annotations", "labels"}
    images = [c["image"] for c in sent["spec"]["template"]["spec"]["containers"]]
    assert images == [c["image"] for c in expected["spec"]["template"]["spec"]["containers"]]
    original = kube_sandbox.get("batch/v1", "Job", NS, "nightly-etl") or {}
    assert GENERATED <= set(original["spec"]["template"]["metadata"]["labels"])  # what had to be stripped
    assert "selector" in original["spec"]
    assert sent["spec"]["backoffLimit"] == expected["spec"]["backoffLimit"]
    assert sent["metadata"]["annotations"]["remedium.io/rerun-of"] == "nightly-etl"
    assert result.checkpoint is not None
    assert result.checkpoint.captured == {"namespace": NS, "job": new, "rerun_of": "nightly-etl"}

    again = await run(action, req)
    assert not again.changed and again.output["job"] == new
    assert len(kube_sandbox.list_objects("batch/v1", "Job", NS)) == 2

    done = await run(
        waiter, request("jobs.wait", {"namespace": NS, "name": new, "timeout": "10s", "poll": "50ms"})
    )
    assert done.output["state"] == "succeeded" and done.output["status"]["succeeded"] == 1

    assert (await undo(action, result)).changed
    assert kube_sandbox.wait_until(lambda: kube_sandbox.get("batch/v1", "Job", NS, new) is None)
    assert not (await undo(action, result)).changed


async def test_rerun_refuses_a_job_that_has_not_failed(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    kube_sandbox.set_job_outcome(NS, "ok", "succeed")
    kube_sandbox.apply(job(NS, "ok"))
    assert kube_sandbox.wait_until(
        lambda: bool(
            ((kube_sandbox.get("batch/v1", "Job", NS, "ok") or {}).get("status") or {}).get("succeeded")
        )
    )
    with pytest.raises(ApplicationError) as refused:
        await run(RerunJob.build(clients), request("jobs.rerun", {"namespace": NS, "name": "ok"}))
    assert refused.value.type == "KubernetesJobNotFailed" and refused.value.non_retryable


async def test_trigger_cronjob_like_kubectl_create_job_from(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    cj = cronjob(NS, "nightly-etl", image="registry.example/etl:2.0", labels={"app": "etl"})
    cj["spec"]["jobTemplate"]["metadata"]["annotations"] = {"team": "data"}
    created_cj = kube_sandbox.apply(cj)
    action = TriggerCronJob.build(clients)
    req = request("jobs.trigger_cronjob", {"namespace": NS, "name": "nightly-etl"}, "trigger")

    preview = await dry(action, req)
    assert preview.would_change and "cronjob.kubernetes.io/instantiate: manual" in preview.diff
    assert kube_sandbox.list_objects("batch/v1", "Job", NS) == []

    result = await run(action, req)
    new = result.output["job"]
    sent = body(kube_sandbox.requests_to("POST", "/jobs$")[-1])
    expected = json.loads(vector("POST", "/jobs$", 1)["body"])
    assert re.fullmatch(r"nightly-etl-manual-[0-9a-f]{8}", new)
    assert sent["metadata"]["annotations"] == expected["metadata"]["annotations"]
    assert sent["metadata"]["labels"] == expected["metadata"]["labels"]
    assert sent["metadata"]["ownerReferences"] == [
        {**expected["metadata"]["ownerReferences"][0], "uid": created_cj["metadata"]["uid"]}
    ]
    assert sent["spec"] == created_cj["spec"]["jobTemplate"]["spec"]
    assert sorted(sent) == sorted(expected) and sorted(sent["metadata"]) == sorted(expected["metadata"])
    assert result.checkpoint is not None
    assert result.checkpoint.captured == {"namespace": NS, "job": new, "cronjob": "nightly-etl"}

    again = await run(action, req)
    assert not again.changed and len(kube_sandbox.list_objects("batch/v1", "Job", NS)) == 1
    assert (await undo(action, result)).changed
    assert kube_sandbox.wait_until(lambda: kube_sandbox.get("batch/v1", "Job", NS, new) is None)


# ------------------------------------------------------------------ errors


async def test_not_found_and_forbidden_are_final_with_the_apiserver_message(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    action = RolloutRestart.build(clients)
    with pytest.raises(ApplicationError) as missing:
        await run(action, request("kubernetes.rollout_restart", {"namespace": NS, "name": "nope"}))
    assert missing.value.non_retryable and missing.value.type == "KubernetesNotFound"
    assert 'deployments.apps "nope" not found' in missing.value.message

    seed(kube_sandbox)
    kube_sandbox.forbid("patch", "deployments", NS)
    with pytest.raises(ApplicationError) as denied:
        await run(action, request("kubernetes.rollout_restart", {"namespace": NS, "name": "api"}))
    assert denied.value.non_retryable and denied.value.type == "KubernetesForbidden"
    assert 'cannot patch resource "deployments"' in denied.value.message


@pytest.mark.parametrize(("status", "kind"), [(409, "KubernetesConflict"), (500, "KubernetesUnavailable")])
async def test_conflicts_and_server_errors_are_retried(
    kube_sandbox: KubernetesSandbox, clients: Clients, status: int, kind: str
) -> None:
    seed(kube_sandbox)
    action = RolloutRestart.build(clients)
    req = request("kubernetes.rollout_restart", {"namespace": NS, "name": "api"})
    kube_sandbox.fail_next("PATCH", "/deployments/api$", status, message="try again")
    with pytest.raises(ApplicationError) as failed:
        await run(action, req)
    assert not failed.value.non_retryable and failed.value.type == kind
    assert get_deployment(kube_sandbox)["metadata"]["generation"] == 1
    assert (await run(action, req)).changed  # the retry goes through, once


async def test_unreachable_apiserver_is_retryable_and_missing_client_names_kubeconfig(
    kube_sandbox: KubernetesSandbox, clients: Clients
) -> None:
    seed(kube_sandbox)
    kube_sandbox.take_down()
    try:
        with pytest.raises(ApplicationError) as down:
            await run(
                Scale.build(clients),
                request("kubernetes.scale", {"namespace": NS, "name": "api", "replicas": 3}),
            )
        assert not down.value.non_retryable and down.value.type == "KubernetesUnreachable"
    finally:
        kube_sandbox.bring_up()
    unconfigured = Scale.build(Clients(http=clients.http))
    with pytest.raises(ApplicationError) as missing:
        await run(unconfigured, request("kubernetes.scale", {"namespace": NS, "name": "api", "replicas": 3}))
    assert missing.value.non_retryable and "KUBECONFIG" in missing.value.message


def test_client_from_kubeconfig_and_none_without_one(
    kube_sandbox: KubernetesSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kube_sandbox.write_kubeconfig(tmp_path / "kubeconfig", context="sandbox")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for var in ("KUBECONFIG", "REMEDIUM_KUBECONFIG", "REMEDIUM_KUBE_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    assert kubernetes_api_client(KubernetesSettings()) is None
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("REMEDIUM_KUBE_CONTEXT", "sandbox")
    api = kubernetes_api_client(KubernetesSettings())
    assert api is not None
    try:
        import kubernetes.client

        assert api.configuration.host == kube_sandbox.url
        assert kubernetes.client.CoreV1Api(api).list_namespaced_pod(NS).items == []
    finally:
        api.close()  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------ waits and diagnostics


async def test_crashlooping_deployment_facts(kube_sandbox: KubernetesSandbox, clients: Clients) -> None:
    seed(kube_sandbox)
    kube_sandbox.set_pod_behaviour(NS, "api", "crashloop", revision=2)
    kube_sandbox.set_pod_logs(NS, "api", ["starting", "panic: config key missing"], revision=2)
    kube_sandbox.apply(deployment(NS, "api", replicas=2, image="registry.example/api:1.3.0"))
    diagnostic = KubernetesFacts.build(clients)

    def crashing() -> bool:
        return any(
            (c.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
            for p in kube_sandbox.list_objects("v1", "Pod", NS, "app=api")
            for c in (p.get("status") or {}).get("containerStatuses") or []
        )

    assert kube_sandbox.wait_until(crashing)

    async def fact(**params: Any) -> Any:
        value, query = await diagnostic.run(
            params_of(diagnostic.params_model, {"namespace": NS, **params}, "kubernetes")
        )
        return value, query

    pods, query = await fact(resource="pods", name="api")
    assert query == "kubectl get pods -n payments -l app=api"
    assert pods["crashlooping"] >= 1 and pods["restarts"] >= 1 and "CrashLoopBackOff" in pods["reasons"]
    worst = pods["pods"][0]
    assert worst["reason"] == "CrashLoopBackOff" and not worst["ready"]
    assert worst["containers"][0]["last_reason"] == "Error" and worst["containers"][0]["last_exit_code"] == 1

    status, _ = await fact(resource="deployment", name="api")
    assert status["revision"] == 2 and status["rollout"] == "progressing"
    assert status["replicas"] == 2 and status["updated"] >= 1 and status["available"] < 3
    assert status["generation"] == status["observed_generation"] == 2
    assert status["images"] == ["registry.example/api:1.3.0"]

    logs, log_query = await fact(resource="logs", name="api", previous=True, tail=1)
    assert logs["lines"] == ["panic: config key missing"] and logs["pod"] == worst["name"]
    assert log_query.endswith("--tail=1 --previous")

    events, _ = await fact(resource="events", name="api")
    assert events["count"] >= 1 and "BackOff" in events["reasons"]

    with pytest.raises(ApplicationError) as timed_out:
        await run(
            WaitRollout.build(clients),
            request(
                "kubernetes.wait_rollout",
                {"namespace": NS, "name": "api", "timeout": "300ms", "poll": "50ms"},
            ),
        )
    assert timed_out.value.type == "KubernetesRolloutTimeout" and timed_out.value.non_retryable
    assert "deployment payments/api not done after" in timed_out.value.message
    assert "new replicas have been updated" in timed_out.value.message
