"""The same three workflows, declaring the versioning behaviour a versioned worker needs.

A worker with a build id (remedium/versioning.py) registers these; an unversioned worker
registers the plain classes, because the server refuses a workflow task that declares a
behaviour from a worker without a deployment version ("versioning behavior cannot be
specified without deployment options being set with versioned mode", dev server 1.32).
The workflow types, code and histories are the same either way: replay is unaffected.

- Incidents are PINNED: one runs start to end on the build it started on, so a new build
  never replays an in-flight incident with new code.
- The rate limiter and the freeze are AUTO_UPGRADE: each is one long-lived workflow shared by
  the incidents of every build (a freeze can last months; a limiter continues as new while
  grants live), so pinning would keep the old build from ever draining. They move to the
  current build at their next task, so their changes still need `workflow.patched`, and the
  messages they accept (slot requests, freeze requests) must stay readable by both builds.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from remedium.models import FreezeState, IncidentInput, IncidentResult
    from remedium.models.trust import AutonomyState
    from remedium.names import (
        AUTONOMY_WORKFLOW_TYPE,
        FREEZE_WORKFLOW_TYPE,
        LIMITER_WORKFLOW_TYPE,
        WORKFLOW_TYPE,
    )
    from workflows.autonomy import AutonomyWorkflow
    from workflows.freeze import FreezeWorkflow
    from workflows.incident import IncidentWorkflow
    from workflows.limiter import LimiterState, TargetLimiterWorkflow


@workflow.defn(name=WORKFLOW_TYPE, versioning_behavior=VersioningBehavior.PINNED)
class PinnedIncidentWorkflow(IncidentWorkflow):
    """IncidentWorkflow, finishing on the build it started on."""

    @workflow.run
    async def run(self, input: IncidentInput) -> IncidentResult:
        return await super().run(input)


@workflow.defn(name=LIMITER_WORKFLOW_TYPE, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class UpgradingTargetLimiterWorkflow(TargetLimiterWorkflow):
    """TargetLimiterWorkflow, moving to the current build at its next task."""

    @workflow.run
    async def run(self, state: LimiterState) -> None:
        await super().run(state)


@workflow.defn(name=FREEZE_WORKFLOW_TYPE, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class UpgradingFreezeWorkflow(FreezeWorkflow):
    """FreezeWorkflow, moving to the current build at its next task."""

    @workflow.run
    async def run(self, state: FreezeState) -> FreezeState:
        return await super().run(state)


@workflow.defn(name=AUTONOMY_WORKFLOW_TYPE, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class UpgradingAutonomyWorkflow(AutonomyWorkflow):
    """AutonomyWorkflow (a runbook's record, as long-lived as the runbook), on the current build."""

    @workflow.run
    async def run(self, state: AutonomyState) -> None:
        await super().run(state)


VERSIONED_WORKFLOWS: list[type] = [
    PinnedIncidentWorkflow,
    UpgradingTargetLimiterWorkflow,
    UpgradingFreezeWorkflow,
    UpgradingAutonomyWorkflow,
]
