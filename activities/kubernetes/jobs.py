"""Job actions: re-running a failed Job, triggering a CronJob now, and waiting for a Job.

A Job cannot be run twice, so a re-run or manual run is a new Job whose name is derived from
the step's idempotency key (jobspec.py): a retried step finds the Job it already created,
and rollback deletes exactly that Job and its pods.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError

from activities.kubernetes.base import DRY, Target, WaitParams, _invalid, _KubeAction, _Wait
from activities.kubernetes.client import reason_of
from activities.kubernetes.facts import job_fact
from activities.kubernetes.jobspec import cronjob_manifest, derived_name, job_state, rerun_manifest
from activities.kubernetes.objects import LAST_STEP, annotations_of, labels_of, meta, yaml_diff
from remedium.catalog import make_checkpoint, register_action
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, DryRun, RollbackRequest
from remedium.models.incident import TargetScope


class JobTarget(Target):
    pass


class _JobCreator(_KubeAction[JobTarget]):
    """Create a Job with a name derived from the step's key; rollback deletes it."""

    async def _create(self, namespace: str, manifest: dict[str, Any], dry: bool) -> dict[str, Any] | None:
        """The created (or would-be) Job, or None when one of that name already exists."""
        try:
            result: dict[str, Any] = await self.kube.call(
                f"create job {namespace}/{manifest['metadata']['name']}",
                self.kube.batch.create_namespaced_job,
                namespace,
                manifest,
                **(DRY if dry else {}),
            )
        except ApplicationError as exc:
            if reason_of(exc) == (409, "AlreadyExists"):
                return None
            raise
        return result

    async def _job(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.call(
            f"get job {namespace}/{name}", self.kube.batch.read_namespaced_job, name, namespace
        )
        return result

    def _manifest_diff(self, would: dict[str, Any], what: str) -> str:
        m = meta(would)
        shown = {
            "metadata": {k: m[k] for k in ("name", "labels", "annotations", "ownerReferences") if m.get(k)},
            "spec": would.get("spec") or {},
        }
        return yaml_diff({}, shown, what)

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        namespace, name = str(captured["namespace"]), str(captured["job"])
        try:
            await self.kube.call(
                f"delete job {namespace}/{name}",
                self.kube.batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApplicationError as exc:
            if reason_of(exc)[0] == 404:
                return self._rolled_back(request, False, f"job {namespace}/{name} is already gone")
            raise
        return self._rolled_back(request, True, f"deleted job {namespace}/{name} and its pods")


@register_action
class RerunJob(_JobCreator):
    name = "jobs.rerun"
    params_model = JobTarget
    description = "Re-run a failed Job under a new name; rollback deletes the re-run."

    async def _prepare(self, request: ActionRequest, params: JobTarget) -> dict[str, Any]:
        job = await self._job(params.namespace, params.name)
        state, message = job_state(job)
        if state != "failed":
            raise _invalid(
                f"job {params.namespace}/{params.name} has not failed ({state}: {message}); "
                "only failed Jobs are re-run",
                ErrorType.KUBERNETES_JOB_NOT_FAILED,
            )
        return rerun_manifest(
            job, derived_name(params.name, "rerun", request.idempotency_key), request.idempotency_key
        )

    async def dry_run(self, request: ActionRequest, params: JobTarget) -> DryRun:
        manifest = await self._prepare(request, params)
        new = manifest["metadata"]["name"]
        target = f"job {params.namespace}/{params.name}"
        would = await self._create(params.namespace, manifest, dry=True)
        scope = TargetScope(
            kind="Job",
            namespace=params.namespace,
            name=params.name,
            labels=manifest["metadata"].get("labels") or {},
        )
        if would is None:
            return self._dry(request, target, f"already re-run as job {params.namespace}/{new}", "", scope)
        diff = self._manifest_diff(would, f"job {params.namespace}/{new}")
        return self._dry(request, target, f"would re-run {target} as job {new}", diff, scope)

    async def execute(self, request: ActionRequest, params: JobTarget) -> ActionResult:
        target = f"job {params.namespace}/{params.name}"
        new = derived_name(params.name, "rerun", request.idempotency_key)
        try:
            manifest = await self._prepare(request, params)
        except ApplicationError as exc:  # the original may be gone by the time a retry comes
            existing = await self._existing_rerun(params.namespace, new, request.idempotency_key)
            if existing is None:
                raise exc from None
            manifest = existing
        created = await self._create(params.namespace, manifest, dry=False)
        if (
            created is None
            and await self._existing_rerun(params.namespace, new, request.idempotency_key) is None
        ):
            raise _invalid(
                f"job {params.namespace}/{new} exists but was not created by this step",
                ErrorType.KUBERNETES_CONFLICT,
            )
        checkpoint = make_checkpoint(
            request,
            f"job {params.namespace}/{new}",
            undo=f"delete job {params.namespace}/{new} (the re-run of {params.name}) and its pods",
            namespace=params.namespace,
            job=new,
            rerun_of=params.name,
        )
        summary = f"re-ran {target} as job {new}" if created else f"{target} was already re-run as job {new}"
        return self._result(request, target, created is not None, summary, {"job": new}, checkpoint)

    async def _existing_rerun(self, namespace: str, name: str, key: str) -> dict[str, Any] | None:
        try:
            job = await self._job(namespace, name)
        except ApplicationError as exc:
            if reason_of(exc)[0] == 404:
                return None
            raise
        return job if annotations_of(job).get(LAST_STEP) == key else None


@register_action
class TriggerCronJob(_JobCreator):
    name = "jobs.trigger_cronjob"
    params_model = JobTarget
    description = "Run a CronJob now (kubectl create job --from=cronjob/...); rollback deletes that Job."

    async def _prepare(
        self, request: ActionRequest, params: JobTarget
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        cronjob: dict[str, Any] = await self.kube.call(
            f"get cronjob {params.namespace}/{params.name}",
            self.kube.batch.read_namespaced_cron_job,
            params.name,
            params.namespace,
        )
        return cronjob, cronjob_manifest(
            cronjob, derived_name(params.name, "manual", request.idempotency_key)
        )

    async def dry_run(self, request: ActionRequest, params: JobTarget) -> DryRun:
        cronjob, manifest = await self._prepare(request, params)
        new = manifest["metadata"]["name"]
        target = f"cronjob {params.namespace}/{params.name}"
        scope = TargetScope(
            kind="CronJob", namespace=params.namespace, name=params.name, labels=labels_of(cronjob)
        )
        would = await self._create(params.namespace, manifest, dry=True)
        if would is None:
            return self._dry(request, target, f"already triggered as job {params.namespace}/{new}", "", scope)
        diff = self._manifest_diff(would, f"job {params.namespace}/{new}")
        return self._dry(request, target, f"would start job {new} from {target} now", diff, scope)

    async def execute(self, request: ActionRequest, params: JobTarget) -> ActionResult:
        cronjob, manifest = await self._prepare(request, params)
        new = manifest["metadata"]["name"]
        target = f"cronjob {params.namespace}/{params.name}"
        created = await self._create(params.namespace, manifest, dry=False)
        if created is None:
            existing = await self._job(params.namespace, new)
            uid = meta(cronjob).get("uid")
            if not any(ref.get("uid") == uid for ref in meta(existing).get("ownerReferences") or []):
                raise _invalid(
                    f"job {params.namespace}/{new} exists but is not a run of {target}",
                    ErrorType.KUBERNETES_CONFLICT,
                )
        checkpoint = make_checkpoint(
            request,
            f"job {params.namespace}/{new}",
            undo=f"delete job {params.namespace}/{new} (the manual run of {target}) and its pods",
            namespace=params.namespace,
            job=new,
            cronjob=params.name,
        )
        summary = (
            f"started job {new} from {target}" if created else f"{target} was already triggered as job {new}"
        )
        return self._result(request, target, created is not None, summary, {"job": new}, checkpoint)


@register_action
class WaitJob(_Wait):
    name = "jobs.wait"
    params_model = WaitParams
    description = "Wait until a Job completes; fail when it fails."
    noun = "job"
    failure_type = ErrorType.KUBERNETES_JOB_FAILED
    timeout_type = ErrorType.KUBERNETES_JOB_TIMEOUT

    async def execute(self, request: ActionRequest, params: WaitParams) -> ActionResult:
        async def check() -> tuple[str, str, dict[str, Any]]:
            job: dict[str, Any] = await self.kube.call(
                f"get job {params.namespace}/{params.name}",
                self.kube.batch.read_namespaced_job,
                params.name,
                params.namespace,
            )
            state, message = job_state(job)
            return state, message, job_fact(job)

        return await self._poll(request, params, check)
