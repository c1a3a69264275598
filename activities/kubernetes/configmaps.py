"""Setting ConfigMap keys, with the values they replace kept so rollback can restore them.

The old values are recorded on the ConfigMap in the same merge patch as the change, so a
retried step rebuilds the same checkpoint instead of recording its own new values as "old";
a key that did not exist before is removed on rollback rather than set to empty.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from activities.kubernetes.base import DRY, MERGE, Target, _KubeAction
from activities.kubernetes.objects import labels_of, marker, recorded, yaml_diff
from remedium.catalog import make_checkpoint, register_action
from remedium.models import ActionRequest, ActionResult, DryRun, RollbackRequest
from remedium.models.incident import TargetScope


class PatchConfigMapParams(Target):
    data: dict[str, str] = Field(min_length=1)


@register_action
class PatchConfigMap(_KubeAction[PatchConfigMapParams]):
    name = "kubernetes.patch_configmap"
    params_model = PatchConfigMapParams
    description = "Set keys of a ConfigMap (JSON merge patch); rollback restores the previous values."

    async def _read(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.call(
            f"get configmap {namespace}/{name}", self.kube.core.read_namespaced_config_map, name, namespace
        )
        return result

    async def _patch(self, namespace: str, name: str, body: dict[str, Any], dry: bool) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.call(
            f"patch configmap {namespace}/{name}",
            self.kube.core.patch_namespaced_config_map,
            name,
            namespace,
            body,
            _content_type=MERGE,
            **(DRY if dry else {}),
        )
        return result

    @staticmethod
    def _undo(target: str, previous: dict[str, str | None]) -> str:
        restored = sorted(k for k, v in previous.items() if v is not None)
        removed = sorted(k for k, v in previous.items() if v is None)
        parts = []
        if restored:
            parts.append(f"restore {', '.join(restored)} to the previous values")
        if removed:
            parts.append(f"remove {', '.join(removed)} (absent before)")
        return f"{' and '.join(parts)} in {target}"

    async def dry_run(self, request: ActionRequest, params: PatchConfigMapParams) -> DryRun:
        cm = await self._read(params.namespace, params.name)
        target = f"configmap {params.namespace}/{params.name}"
        body = {"metadata": {"annotations": marker(request.idempotency_key)}, "data": params.data}
        would = await self._patch(params.namespace, params.name, body, dry=True)
        diff = yaml_diff({"data": cm.get("data") or {}}, {"data": would.get("data") or {}}, target)
        keys = ", ".join(sorted(params.data))
        summary = f"would set {keys} in {target}" if diff else f"{target} already has these values for {keys}"
        scope = TargetScope(
            kind="ConfigMap", namespace=params.namespace, name=params.name, labels=labels_of(cm)
        )
        return self._dry(request, target, summary, diff, scope)

    async def execute(self, request: ActionRequest, params: PatchConfigMapParams) -> ActionResult:
        cm = await self._read(params.namespace, params.name)
        target = f"configmap {params.namespace}/{params.name}"
        state = recorded(cm, request.idempotency_key)
        data = dict(cm.get("data") or {})
        if state is not None:
            previous: dict[str, str | None] = dict(state.get("previous") or {})
            changed, summary = False, f"{target} was already patched by this step"
        else:
            previous = {k: data.get(k) for k in params.data}
            if all(data.get(k) == v for k, v in params.data.items()):
                return self._result(request, target, False, f"{target} already has these values")
            body = {
                "metadata": {"annotations": marker(request.idempotency_key, {"previous": previous})},
                "data": params.data,
            }
            await self._patch(params.namespace, params.name, body, dry=False)
            changed, summary = True, f"set {', '.join(sorted(params.data))} in {target}"
        checkpoint = make_checkpoint(
            request,
            target,
            undo=self._undo(target, previous),
            namespace=params.namespace,
            name=params.name,
            previous=previous,
        )
        return self._result(request, target, changed, summary, {"keys": sorted(params.data)}, checkpoint)

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        namespace, name = str(captured["namespace"]), str(captured["name"])
        previous: dict[str, str | None] = dict(captured.get("previous") or {})
        cm = await self._read(namespace, name)
        data = dict(cm.get("data") or {})
        if all(data.get(k) == v for k, v in previous.items()):
            return self._rolled_back(
                request, False, f"configmap {namespace}/{name} already has the previous values"
            )
        body = {"metadata": {"annotations": marker(request.idempotency_key)}, "data": previous}
        await self._patch(namespace, name, body, dry=False)
        keys = ", ".join(sorted(previous))
        return self._rolled_back(request, True, f"restored {keys} of configmap {namespace}/{name}")
