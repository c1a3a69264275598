"""Worker Deployment versioning: what lets a new worker build go live while incidents run.

An incident can wait hours for an approval or a verify window. Without versioning, the
next workflow task after a deploy runs on whichever build polls first, so a new build
replays an old incident's history with new code, and any change that is not wrapped in
`workflow.patched` fails it with a nondeterminism error. With a build id set, every worker
process joins the Worker Deployment version `<deployment name>.<build id>` and registers
workflows/versioned.py: incidents are PINNED to the version they started on and finish
there, while the version made current (`temporal worker deployment set-current-version`)
takes new ones; the limiter and freeze workflows follow the current version (AUTO_UPGRADE).

Off unless `REMEDIUM_WORKER_BUILD_ID` is set, so an unversioned worker behaves as before.
"""

from __future__ import annotations

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import WorkerDeploymentConfig

from remedium.errors import StartupError
from remedium.settings import Settings


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """The version this worker polls as, or None when versioning is off (no build id)."""
    build_id = (settings.worker_build_id or "").strip()
    if not build_id:
        return None
    name = (settings.worker_deployment_name or settings.task_queue).strip()
    if not name or "." in name:
        # Temporal writes a version as `<deployment name>.<build id>`: a dot in the name is ambiguous.
        raise StartupError(
            f"REMEDIUM_WORKER_DEPLOYMENT_NAME {name!r} is not a valid Worker Deployment name: "
            "it must be non-empty and contain no '.' (set it, or use a task queue without dots)"
        )
    return WorkerDeploymentVersion(deployment_name=name, build_id=build_id)


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The config both workers of a process share (normal and urgent queue: one version).

    A workflow type added without a behaviour defaults to PINNED: safe by default, at worst
    keeping an old build busy until its runs end.
    """
    version = deployment_version(settings)
    if version is None:
        return None
    return WorkerDeploymentConfig(
        version=version,
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )
