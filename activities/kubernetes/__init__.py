"""Kubernetes remediation actions and the `kubernetes` diagnostic, done the way kubectl does them.

Actions (params; Checkpoint.captured; what rollback does):

- `kubernetes.rollout_restart` {namespace, name}: kubectl's strategic-merge patch of
  `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`.
  captured `{kind: "Deployment", namespace, name, revision, template}` (the revision and pod
  template before the restart); rollback = `kubectl rollout undo --to-revision=<revision>`.
- `kubernetes.scale` {namespace, name, replicas | delta, kind: Deployment|StatefulSet}: PATCH of
  the `scale` subresource. captured `{kind, namespace, name, replicas}`; rollback scales back.
- `kubernetes.rollback` {namespace, name, revision?}: `kubectl rollout undo` (default: the
  previous revision). captured as for rollout_restart; rollback undoes to that revision again.
- `kubernetes.delete_pod` {namespace, name | selector, count}: DELETE with a uid precondition.
  captured `{namespace, pods: [{name, uid, owner}]}`; rollback restores nothing (the pods'
  controllers recreate them), which the checkpoint's undo text says.
- `kubernetes.patch_configmap` {namespace, name, data}: JSON merge patch of `data`.
  captured `{namespace, name, previous: {key: old value | None}}`; rollback writes the old
  values back and removes keys that did not exist (None).
- `jobs.rerun` {namespace, name}: a failed Job re-created as `<name>-rerun-<hash of step key>`.
  captured `{namespace, job, rerun_of}`; rollback deletes that Job and its pods.
- `jobs.trigger_cronjob` {namespace, name}: `kubectl create job --from=cronjob/<name>` as
  `<name>-manual-<hash of step key>`. captured `{namespace, job, cronjob}`; rollback deletes it.
- `kubernetes.wait_rollout` {namespace, name, timeout, poll} and `jobs.wait` {namespace, name,
  timeout, poll}: read-only; succeed with the final status in `output`, or fail
  (non-retryable: KubernetesRolloutFailed/KubernetesRolloutTimeout, KubernetesJobFailed/
  KubernetesJobTimeout) with the reason.

Every state-changing dry run asks the apiserver itself (`dryRun=All`) and diffs YAML of the
current against the would-be object. Steps are idempotent by `<incident>/<step>`: the key is
written to the `remedium.io/last-step` annotation of the object changed (for pods, of their
controller; for Jobs, the name is derived from it), and a step that finds its own key does
nothing again.

Diagnostic `kubernetes` {resource, namespace, name?, selector?, container?, previous?, tail?};
the fact's value by resource:

- deployment: `{namespace, name, replicas, current, updated, ready, available, unavailable,
  generation, observed_generation, revision, paused, images, rollout: complete|progressing|failed,
  rollout_message, conditions: [{type, status, reason, message}]}`
- pods (name = a Deployment, or selector): `{namespace, selector, total, ready, not_ready, pending,
  crashlooping, oomkilled, image_pull_errors, restarts, reasons, pods: [{name, phase, ready,
  restarts, reason, last_reason, node, terminating, created, containers: [{name, ready, restarts,
  state: waiting|running|terminated, reason, message, exit_code, last_reason, last_exit_code}]}]}`,
  least healthy pod first; e.g. `facts.pods.value.crashlooping > 0`.
- events (name optional: the object and those named `<name>-...`): `{namespace, name, count,
  warnings, reasons, events: [{type, reason, message, object, count, last_seen}]}`, newest first.
- logs (name = a pod, or a Deployment / selector whose least healthy pod is read): `{pod,
  container, previous, count, lines, text}`, the last `tail` lines.
- job (`latest_run: true`: the newest of the Job and its `jobs.rerun` re-runs): `{namespace, name,
  state: succeeded|failed|running|suspended, message, active, succeeded,
  failed, backoff_limit, start_time, completion_time, conditions}`.

Modules, each importing only those before it: client (settings, the ApiClient, calls),
objects (JSON readers, idempotency annotations), base (the shared bases), revisions (rollout
history and undo), jobspec (Job manifests and verdicts), facts (the diagnostic), then the
actions: deployments, pods, configmaps, jobs. Importing this package registers them all.
"""

from __future__ import annotations

from activities.kubernetes.base import Target, WaitParams
from activities.kubernetes.client import KUBERNETES, KubernetesSettings, kubernetes_api_client
from activities.kubernetes.configmaps import PatchConfigMap, PatchConfigMapParams
from activities.kubernetes.deployments import (
    Rollback,
    RollbackParams,
    RolloutRestart,
    RolloutRestartParams,
    Scale,
    ScaleParams,
    WaitRollout,
)
from activities.kubernetes.facts import KubernetesFactParams, KubernetesFacts
from activities.kubernetes.jobs import JobTarget, RerunJob, TriggerCronJob, WaitJob
from activities.kubernetes.pods import DeletePod, DeletePodParams

__all__ = [
    "KUBERNETES",
    "DeletePod",
    "DeletePodParams",
    "JobTarget",
    "KubernetesFactParams",
    "KubernetesFacts",
    "KubernetesSettings",
    "PatchConfigMap",
    "PatchConfigMapParams",
    "RerunJob",
    "Rollback",
    "RollbackParams",
    "RolloutRestart",
    "RolloutRestartParams",
    "Scale",
    "ScaleParams",
    "Target",
    "TriggerCronJob",
    "WaitJob",
    "WaitParams",
    "WaitRollout",
    "kubernetes_api_client",
]
