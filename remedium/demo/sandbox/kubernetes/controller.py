"""The background loop standing in for kube-controller-manager, the scheduler and the kubelet.

One tick, under the store's lock: kubelet (pods advance), ReplicaSets, Deployments, Jobs,
then garbage collection by ownerReferences (Background and Foreground propagation).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from remedium.demo.sandbox.kubernetes import kinds
from remedium.demo.sandbox.kubernetes.jobs import JOB, Jobs
from remedium.demo.sandbox.kubernetes.pods import Kubelet
from remedium.demo.sandbox.kubernetes.rollout import DEPLOYMENT, POD, REPLICASET, Rollouts
from remedium.demo.sandbox.kubernetes.scenario import Scenario
from remedium.demo.sandbox.kubernetes.store import Store

log = logging.getLogger("remedium.demo.sandbox.kubernetes")
FOREGROUND = "foregroundDeletion"


class Controller:
    def __init__(self, store: Store, scenario: Scenario, tick: float) -> None:
        self.store = store
        self.tick = tick
        self.kubelet = Kubelet(store, scenario)
        self.rollouts = Rollouts(store, self.kubelet)
        self.jobs = Jobs(store, self.kubelet)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._running.set()
        self._thread = threading.Thread(target=self._loop, name="k8s-sandbox-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            self._running.wait()
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:  # a controller bug must not kill the cluster; it shows in the log
                log.exception("sandbox controller tick failed")

    def step(self) -> None:
        with self.store.lock:
            for pod in self.store.objects(POD):
                if pod["metadata"].get("deletionTimestamp"):
                    self.store.remove(pod)
                    self.kubelet.sims.pop(pod["metadata"]["uid"], None)
                else:
                    self.kubelet.tick(pod)
            for rs in self.store.objects(REPLICASET):
                self.rollouts.sync_replicaset(rs)
            for deployment in self.store.objects(DEPLOYMENT):
                self.rollouts.sync_deployment(deployment)
            for job in self.store.objects(JOB):
                self.jobs.sync(job)
            self._collect_garbage()

    def _collect_garbage(self) -> None:
        objects = self.store.all_objects()
        by_uid = {o["metadata"]["uid"]: o for o in objects}
        dependents: dict[str, list[dict[str, Any]]] = {}
        for obj in objects:
            refs = obj["metadata"].get("ownerReferences") or []
            for ref in refs:
                dependents.setdefault(str(ref.get("uid")), []).append(obj)
            if not refs or obj["metadata"].get("deletionTimestamp"):
                continue
            owners = [by_uid.get(str(ref.get("uid"))) for ref in refs]
            gone = all(owner is None for owner in owners)
            foreground = any(
                owner is not None and FOREGROUND in (owner["metadata"].get("finalizers") or [])
                for owner in owners
            )
            if gone or foreground:
                self._delete(obj)
        for obj in objects:
            meta = obj["metadata"]
            if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
                alive = [
                    d for d in dependents.get(meta["uid"], []) if by_uid.get(d["metadata"]["uid"]) is not None
                ]
                alive = [d for d in alive if self._exists(d)]
                if not alive:
                    self.store.remove(obj)

    def _exists(self, obj: dict[str, Any]) -> bool:
        kind = kinds.lookup(obj["apiVersion"], obj["kind"])
        return self.store.find(kind, obj["metadata"]["namespace"], obj["metadata"]["name"]) is obj

    def _delete(self, obj: dict[str, Any]) -> None:
        kind = kinds.lookup(obj["apiVersion"], obj["kind"])
        if self._exists(obj):
            self.store.delete(
                kind,
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
                {"propagationPolicy": "Background"},
            )
