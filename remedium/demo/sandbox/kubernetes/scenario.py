"""What simulated workloads do: pod behaviour and logs per (namespace, deployment, revision); Job outcomes.

Keyed by revision so one scenario can say "revision 1 crashloops, revision 2 is healthy" (a
restart or rollback recovers) or "every revision crashloops" (remediation must give up).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

BEHAVIOURS = ("ready", "crashloop", "oomkilled", "imagepull", "unready")
OUTCOMES = ("succeed", "fail")

_DEFAULT_LINES = {
    "ready": ["starting {name}", "loaded configuration", "listening on :8080", "GET /healthz 200"],
    "unready": ["starting {name}", "waiting for upstream dependency", "GET /readyz 503"],
    "crashloop": [
        "starting {name}",
        "connecting to postgres at db:5432",
        "fatal: dial tcp 10.0.0.12:5432: connect: connection refused",
    ],
    "oomkilled": ["starting {name}", "warming cache", "allocating 2048MiB for index"],
    "imagepull": [],
    "succeed": ["starting job {name}", "processed 1000 records", "done"],
    "fail": ["starting job {name}", "error: upstream returned HTTP 500", "job failed"],
}


@dataclass
class Scenario:
    lock: threading.Lock = field(default_factory=threading.Lock)
    behaviours: dict[tuple[str, str, int | None], str] = field(default_factory=dict)
    logs: dict[tuple[str, str, int | None], list[str]] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)

    def set_behaviour(self, namespace: str, owner: str, behaviour: str, revision: int | None) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown pod behaviour {behaviour!r}; choose one of {', '.join(BEHAVIOURS)}")
        with self.lock:
            self.behaviours[(namespace, owner, revision)] = behaviour

    def set_logs(self, namespace: str, owner: str, lines: list[str], revision: int | None) -> None:
        with self.lock:
            self.logs[(namespace, owner, revision)] = list(lines)

    def set_outcome(self, namespace: str, prefix: str, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown job outcome {outcome!r}; choose 'succeed' or 'fail'")
        with self.lock:
            self.outcomes[(namespace, prefix)] = outcome

    def behaviour(self, namespace: str, owner: str, revision: int | None) -> str:
        with self.lock:
            found = self.behaviours.get((namespace, owner, revision))
            return found or self.behaviours.get((namespace, owner, None), "ready")

    def outcome(self, namespace: str, job: str) -> str:
        with self.lock:
            matches = [
                (len(p), o) for (ns, p), o in self.outcomes.items() if ns == namespace and job.startswith(p)
            ]
            return max(matches)[1] if matches else "succeed"

    def lines(self, namespace: str, owner: str, revision: int | None, behaviour: str, pod: str) -> list[str]:
        with self.lock:
            found = self.logs.get((namespace, owner, revision))
            if found is None:
                found = self.logs.get((namespace, owner, None))
        if found is not None:
            return list(found)
        return [line.format(name=pod) for line in _DEFAULT_LINES.get(behaviour, [])]
