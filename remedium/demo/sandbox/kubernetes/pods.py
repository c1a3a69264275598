"""The kubelet, simulated: a pod's containers start, run, crash, back off or fail to pull, per scenario.

Each pod carries a small state machine advanced once per controller tick; its status is
rendered from that state in the kubelet's shape (container `state`/`lastState`,
`restartCount`, the Ready/ContainersReady conditions) so what a client reads is what it
would read on a node. Each container run keeps its log lines, which is what `previous=true`
returns.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from remedium.demo.sandbox.kubernetes import events
from remedium.demo.sandbox.kubernetes.errors import bad_request
from remedium.demo.sandbox.kubernetes.scenario import Scenario
from remedium.demo.sandbox.kubernetes.store import Store, now

NODE = "sandbox-node-1"
HOST_IP = "10.0.0.11"
CRASH = {"crashloop": (1, "Error"), "oomkilled": (137, "OOMKilled")}


@dataclass
class Run:
    started: datetime
    container_id: str
    lines: list[str]
    finished: datetime | None = None
    exit_code: int = 0
    reason: str = ""

    def stamped(self) -> list[tuple[datetime, str]]:
        return [(self.started + timedelta(milliseconds=5 * i), line) for i, line in enumerate(self.lines)]


@dataclass
class PodSim:
    """A pod's simulated kubelet state. `owner` is the Deployment or Job name the scenario is keyed by."""

    namespace: str
    owner: str
    revision: int | None
    job: bool = False
    state: str = "creating"  # creating | running | backoff | pullfail | done
    restarts: int = 0
    runs: list[Run] = field(default_factory=list)
    ready_since: float | None = None
    started_at: str = ""
    pull_attempts: int = 0
    backoff_left: int = 0
    pod_ip: str = ""
    transitions: dict[str, str] = field(default_factory=dict)

    def available(self, min_ready_seconds: int) -> bool:
        return self.ready_since is not None and time.monotonic() - self.ready_since >= min_ready_seconds


class Kubelet:
    def __init__(self, store: Store, scenario: Scenario) -> None:
        self.store = store
        self.scenario = scenario
        self.sims: dict[str, PodSim] = {}
        self._next_ip = 10

    def adopt(self, pod: dict[str, Any], owner: str, revision: int | None, job: bool = False) -> PodSim:
        sim = PodSim(pod["metadata"]["namespace"], owner, revision, job)
        self.sims[pod["metadata"]["uid"]] = sim
        return sim

    def sim(self, pod: dict[str, Any]) -> PodSim:
        uid = pod["metadata"]["uid"]
        if uid not in self.sims:  # a bare pod created through the API
            self.adopt(pod, pod["metadata"]["name"], None)
        return self.sims[uid]

    def behaviour(self, sim: PodSim) -> str:
        if sim.job:
            return self.scenario.outcome(sim.namespace, sim.owner)
        return self.scenario.behaviour(sim.namespace, sim.owner, sim.revision)

    # ------------------------------------------------------------ per tick

    def tick(self, pod: dict[str, Any]) -> None:
        sim = self.sim(pod)
        if not pod["spec"].get("nodeName"):
            pod["spec"]["nodeName"] = NODE
            self._next_ip += 1
            sim.pod_ip = f"10.244.0.{self._next_ip % 250 + 2}"
            sim.started_at = now()
            events.record(
                self.store,
                pod,
                "Scheduled",
                f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {NODE}",
                component="default-scheduler",
            )
        else:
            self._advance(pod, sim, self.behaviour(sim))
        status = self.render(pod, sim)
        if status != pod.get("status") or pod["metadata"].get("resourceVersion") is None:
            pod["status"] = status
            self.store.write(pod)

    def _container(self, pod: dict[str, Any]) -> dict[str, Any]:
        containers: list[dict[str, Any]] = pod["spec"].get("containers") or [{}]
        return containers[0]

    def _start(self, pod: dict[str, Any], sim: PodSim, behaviour: str) -> None:
        container = self._container(pod)
        name, image = container.get("name", ""), container.get("image", "")
        events.record(self.store, pod, "Pulled", f'Container image "{image}" already present on machine')
        events.record(self.store, pod, "Created", f"Created container: {name}")
        events.record(self.store, pod, "Started", f"Started container {name}")
        lines = self.scenario.lines(
            sim.namespace, sim.owner, sim.revision, behaviour, pod["metadata"]["name"]
        )
        sim.runs.append(Run(datetime.now(UTC), secrets.token_hex(32), lines))
        sim.state = "running"
        sim.ready_since = time.monotonic() if behaviour == "ready" else None

    def _advance(self, pod: dict[str, Any], sim: PodSim, behaviour: str) -> None:
        if pod["metadata"].get("deletionTimestamp") or sim.state == "done":
            return
        container = self._container(pod)
        if sim.job:
            if sim.state == "creating":
                self._start(pod, sim, behaviour)
            elif sim.state == "running":
                run = sim.runs[-1]
                run.finished = datetime.now(UTC)
                run.exit_code, run.reason = (0, "Completed") if behaviour == "succeed" else (1, "Error")
                sim.state = "done"
            return
        if sim.state in ("creating", "pullfail") and behaviour == "imagepull":
            sim.pull_attempts += 1
            sim.state = "pullfail"
            image = container.get("image", "")
            if sim.pull_attempts == 1:
                events.record(
                    self.store,
                    pod,
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                    f'failed to pull and unpack image "{image}": not found',
                    "Warning",
                )
                events.record(self.store, pod, "Failed", "Error: ErrImagePull", "Warning")
            events.record(self.store, pod, "BackOff", f'Back-off pulling image "{image}"', "Normal")
            return
        if sim.state == "backoff" and sim.backoff_left > 0:
            sim.backoff_left -= 1  # the kubelet's back-off: waiting dominates what a client sees
            return
        if sim.state in ("creating", "pullfail", "backoff"):
            self._start(pod, sim, behaviour)
            return
        if sim.state == "running" and behaviour in CRASH:
            run = sim.runs[-1]
            run.finished = datetime.now(UTC)
            run.exit_code, run.reason = CRASH[behaviour]
            sim.restarts += 1
            sim.state = "backoff"
            sim.backoff_left = min(sim.restarts, 4)
            sim.ready_since = None
            name = container.get("name", "")
            events.record(
                self.store,
                pod,
                "BackOff",
                f"Back-off restarting failed container {name} in pod {pod['metadata']['name']}_"
                f"{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                "Warning",
            )
        elif sim.state == "running":
            if behaviour == "ready" and sim.ready_since is None:
                sim.ready_since = time.monotonic()
            elif behaviour != "ready":
                sim.ready_since = None

    # ------------------------------------------------------------- status

    def render(self, pod: dict[str, Any], sim: PodSim) -> dict[str, Any]:
        container = self._container(pod)
        name, image = container.get("name", ""), container.get("image", "")
        ready = sim.ready_since is not None and sim.state == "running"
        scheduled = bool(pod["spec"].get("nodeName"))
        state: dict[str, Any]
        last: dict[str, Any] = {}
        if sim.state == "creating":
            state = {"waiting": {"reason": "ContainerCreating"}}
        elif sim.state == "pullfail":
            reason = "ErrImagePull" if sim.pull_attempts <= 1 else "ImagePullBackOff"
            message = (
                f'Back-off pulling image "{image}"'
                if reason == "ImagePullBackOff"
                else f'failed to pull "{image}"'
            )
            state = {"waiting": {"reason": reason, "message": message}}
        elif sim.state == "running":
            state = {"running": {"startedAt": _iso(sim.runs[-1].started)}}
        elif sim.state == "backoff":
            state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={name} "
                    f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                }
            }
        else:
            state = {"terminated": _terminated(sim.runs[-1])}
        finished = [
            r for r in sim.runs if r.finished is not None and (sim.state != "done" or r is not sim.runs[-1])
        ]
        if finished:
            last = {"terminated": _terminated(finished[-1])}
        phase = "Pending"
        if sim.state in ("running", "backoff"):
            phase = "Running"
        elif sim.state == "done":
            phase = "Succeeded" if sim.runs[-1].exit_code == 0 else "Failed"
        container_status: dict[str, Any] = {
            "name": name,
            "state": state,
            "lastState": last,
            "ready": ready,
            "restartCount": sim.restarts,
            "image": image,
            "imageID": ""
            if sim.state in ("creating", "pullfail")
            else f"{image.split(':')[0]}@sha256:{'0' * 64}",
            "started": sim.state == "running",
        }
        if sim.runs and sim.state not in ("creating", "pullfail"):
            container_status["containerID"] = f"containerd://{sim.runs[-1].container_id}"
        not_ready = f"containers with unready status: [{name}]"
        conditions = [
            self._condition(sim, "PodReadyToStartContainers", sim.state != "creating" and scheduled),
            self._condition(sim, "Initialized", scheduled),
            self._condition(sim, "Ready", ready, "" if ready else _not_ready_reason(phase), not_ready),
            self._condition(
                sim, "ContainersReady", ready, "" if ready else _not_ready_reason(phase), not_ready
            ),
            self._condition(sim, "PodScheduled", scheduled),
        ]
        status: dict[str, Any] = {"phase": phase, "conditions": conditions}
        if scheduled:
            status.update(hostIP=HOST_IP, hostIPs=[{"ip": HOST_IP}], startTime=sim.started_at)
            if sim.state != "creating":
                status.update(podIP=sim.pod_ip, podIPs=[{"ip": sim.pod_ip}])
            status["containerStatuses"] = [container_status]
        status["qosClass"] = "BestEffort"
        return status

    def _condition(
        self, sim: PodSim, kind: str, ok: bool, reason: str = "", message: str = ""
    ) -> dict[str, Any]:
        value = "True" if ok else "False"
        key = f"{kind}={value}"
        if key not in sim.transitions:
            sim.transitions = {k: v for k, v in sim.transitions.items() if not k.startswith(f"{kind}=")}
            sim.transitions[key] = now()
        condition: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": sim.transitions[key],
        }
        if reason:
            condition.update(reason=reason, message=message)
        return condition

    # --------------------------------------------------------------- logs

    def logs(
        self,
        pod: dict[str, Any],
        container: str,
        previous: bool,
        tail_lines: int | None,
        timestamps: bool,
        since_seconds: int | None,
    ) -> str:
        pod_name = pod["metadata"]["name"]
        names = [c.get("name", "") for c in pod["spec"].get("containers") or []]
        if not container:
            if len(names) != 1:
                choices = " ".join(names)
                raise bad_request(
                    f"a container name must be specified for pod {pod_name}, choose one of: [{choices}]"
                )
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {pod_name}")
        sim = self.sim(pod)
        if previous:
            done = [r for r in sim.runs if r.finished is not None]
            if sim.state == "done" and done and done[-1] is sim.runs[-1]:
                done = done[:-1]
            if not done or not sim.restarts:
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{pod_name}" not found'
                )
            run = done[-1]
        else:
            if not sim.runs:
                why = "trying and failing to pull image" if sim.state == "pullfail" else "ContainerCreating"
                raise bad_request(f'container "{container}" in pod "{pod_name}" is waiting to start: {why}')
            run = sim.runs[-1]
        lines = run.stamped()
        if since_seconds is not None:
            cutoff = datetime.now(UTC) - timedelta(seconds=since_seconds)
            lines = [(t, line) for t, line in lines if t >= cutoff]
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        if timestamps:
            return "".join(f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}\n" for t, line in lines)
        return "".join(f"{line}\n" for _, line in lines)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated(run: Run) -> dict[str, Any]:
    return {
        "exitCode": run.exit_code,
        "reason": run.reason,
        "startedAt": _iso(run.started),
        "finishedAt": _iso(run.finished or run.started),
        "containerID": f"containerd://{run.container_id}",
    }


def _not_ready_reason(phase: str) -> str:
    return "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
