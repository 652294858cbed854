"""Ray helpers for tests."""

from __future__ import annotations


def actor_dies_within(actor, seconds: float) -> bool:
    """ray.kill is asynchronous: poll until calls on the actor fail."""
    import time

    import ray

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return True
        time.sleep(0.2)
    return False
