"""Fault-injection state, armed through the `devnode_*` RPCs and consulted per call.

It has its own lock (not the node's) so the HTTP layer can consult it and sleep for the
configured latency without blocking other requests. `devnode_*` methods are never subject
to faults, so a test can always disarm what it armed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class ArmedError:
    code: int
    message: str
    remaining: int


@dataclass
class Faults:
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail: dict[str, list[ArmedError]] = field(default_factory=dict)
    drop: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    hold: dict[str, list[float]] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    abandoned: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def exempt(method: str) -> bool:
        return method.startswith("devnode_")

    def record_call(self, method: str) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    def arm_failure(self, method: str, code: int, message: str, count: int) -> None:
        with self.lock:
            self.fail.setdefault(method, []).append(ArmedError(code, message, count))

    def take_failure(self, method: str) -> ArmedError | None:
        """The armed error for this call of `method` (or of any method, "*"), used up."""
        if self.exempt(method):
            return None
        with self.lock:
            for key in (method, "*"):
                queue = self.fail.get(key)
                if queue:
                    armed = queue[0]
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        queue.pop(0)
                    return armed
        return None

    def arm_drop(self, method: str, count: int) -> None:
        with self.lock:
            self.drop[method] = self.drop.get(method, 0) + count

    def take_drop(self, method: str) -> bool:
        if self.exempt(method):
            return False
        with self.lock:
            for key in (method, "*"):
                if self.drop.get(key, 0) > 0:
                    self.drop[key] -= 1
                    return True
        return False

    def set_latency(self, method: str, seconds: float) -> None:
        with self.lock:
            if seconds <= 0:
                self.latency.pop(method, None)
            else:
                self.latency[method] = seconds

    def latency_for(self, method: str) -> float:
        if self.exempt(method):
            return 0.0
        with self.lock:
            return self.latency.get(method, self.latency.get("*", 0.0))

    def arm_hold(self, method: str, seconds: float, count: int) -> None:
        with self.lock:
            self.hold.setdefault(method, []).extend([seconds] * count)

    def take_hold(self, method: str) -> float:
        """How long this call of `method` waits before it runs (0: not held), used up."""
        if self.exempt(method):
            return 0.0
        with self.lock:
            queue = self.hold.get(method)
            if not queue:
                return 0.0
            self.held[method] = self.held.get(method, 0) + 1
            return queue.pop(0)

    def record_abandoned(self, method: str) -> None:
        """A held call whose caller left: it never ran."""
        with self.lock:
            self.abandoned[method] = self.abandoned.get(method, 0) + 1

    def clear(self) -> None:
        with self.lock:
            self.fail.clear()
            self.drop.clear()
            self.latency.clear()
            self.hold.clear()

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {
                "fail_next": {
                    m: [{"code": a.code, "message": a.message, "remaining": a.remaining}
                        for a in q]
                    for m, q in self.fail.items() if q
                },
                "drop_reply": {m: n for m, n in self.drop.items() if n > 0},
                "latency": dict(self.latency),
                "hold": {m: len(q) for m, q in self.hold.items() if q},
                "held": dict(self.held),
                "abandoned": dict(self.abandoned),
                "calls": dict(self.calls),
            }
