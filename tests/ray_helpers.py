"""Ray helpers for tests: waiting for killed actors, and multi-node clusters on 127.0.0.1.

A multi-node cluster cannot share the test process with the session-wide local Ray of
``tests/conftest.py`` (a process joins one Ray at a time), so :class:`LoopbackCluster` runs
``ray.cluster_utils.Cluster`` in a child process of its own, driven over stdin/stdout with one
JSON line per command (add a node, remove a node, shut down). Training drivers are child
processes too (:func:`run_driver`), joining that cluster through ``RAY_ADDRESS`` exactly as
``ray job submit`` would make them. Every process is stopped by the context manager that
started it; Cluster's reaper ends a node's processes if its owner dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "PYTHONUNBUFFERED": "1",
    # Ray rewrites a 127.0.0.1 address to the machine's network IP unless clusters are "off"
    # (its Windows/macOS mode); Cluster ignores the switch, so nodes and drivers stay on loopback.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def actor_dies_within(actor, seconds: float) -> bool:
    """ray.kill is asynchronous: poll until calls on the actor fail."""
    import ray

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return True
        time.sleep(0.2)
    return False


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(CHILD_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _read_line(proc: subprocess.Popen, deadline: float, what: str) -> str:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer from the cluster process for {what}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the cluster process exited (code {proc.poll()}) during {what}")
            if line.startswith("@@"):
                return line[2:]


class LoopbackCluster:
    """A ``ray.cluster_utils.Cluster`` on 127.0.0.1 in a child process.

    Args:
        head: ``add_node`` kwargs of the head (e.g. ``num_cpus=0`` like a KubeRay head).
    """

    def __init__(self, timeout_s: float = 120.0, **head: Any) -> None:
        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.ray_helpers import serve_cluster; serve_cluster()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=child_env(),
        )
        try:
            answer = self._call({"op": "start", "head": head}, "start")
        except BaseException:
            self.close()
            raise
        self.address: str = answer["address"]
        self.head_id: str = answer["node_id"]

    def _call(self, command: dict[str, Any], what: str) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(_read_line(self.proc, time.monotonic() + self.timeout_s, what))
        if "error" in answer:
            raise RuntimeError(f"cluster process: {answer['error']}")
        return answer

    def add_node(self, **kwargs: Any) -> str:
        """Start a worker node (``num_cpus``, ``resources`` ...); returns its node id."""
        return self._call({"op": "add_node", "node": kwargs}, "add_node")["node_id"]

    def remove_node(self, node_id: str) -> None:
        """Kill every process of that node, as a lost machine would."""
        self._call({"op": "remove_node", "node_id": node_id}, "remove_node")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=30)

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _forget_cluster_address(address: str) -> None:
    """Cluster records its address as the machine's "current" Ray (/tmp/ray/ray_current_cluster),
    which every plain ``ray.init()`` on the machine would then join (the session fixture's, other
    test runs'): remove the record at once, so only drivers given RAY_ADDRESS find this cluster."""
    from ray._private.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    if path.is_file() and path.read_text().strip() == address:
        path.unlink()


def _worker_processes(node: Any) -> list[psutil.Process]:
    """The processes the node's raylet started (its workers), found before the raylet dies."""
    raylets = node.all_processes.get("raylet") or []
    processes: list[psutil.Process] = []
    for info in raylets:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes += psutil.Process(info.process.pid).children(recursive=True)
    return processes


def serve_cluster() -> None:
    """The child side of :class:`LoopbackCluster` (one JSON command per stdin line)."""
    from ray.cluster_utils import Cluster

    cluster: Cluster | None = None
    nodes: dict[str, Any] = {}

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write("@@" + json.dumps(payload) + "\n")
        sys.stdout.flush()

    def node_args(args: dict[str, Any]) -> dict[str, Any]:
        return {"node_ip_address": "127.0.0.1", "include_dashboard": False, **args}

    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            try:
                if op == "start":
                    cluster = Cluster(initialize_head=True, head_node_args=node_args(command["head"]))
                    _forget_cluster_address(cluster.address)
                    head = cluster.head_node
                    nodes[head.node_id] = head
                    reply({"address": cluster.address, "node_id": head.node_id})
                elif op == "add_node":
                    node = cluster.add_node(**node_args(command["node"]))
                    nodes[node.node_id] = node
                    reply({"node_id": node.node_id})
                elif op == "remove_node":
                    node = nodes.pop(command["node_id"])
                    # A lost machine takes its worker processes with it. Ray's remove_node kills
                    # the node's own processes (raylet, agents); a worker finds out seconds
                    # later and meanwhile still answers calls that need nothing from its raylet.
                    workers = _worker_processes(node)
                    for worker in workers:
                        worker.kill()
                    cluster.remove_node(node, allow_graceful=False)
                    psutil.wait_procs(workers, timeout=10)
                    reply({"ok": True})
                elif op == "shutdown":
                    break
            except Exception as exc:  # reported to the test, which raises it
                reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        if cluster is not None:
            cluster.shutdown()


class Driver:
    """A training script in a child process (``RAY_ADDRESS`` set when ``address`` is given),
    whose stdout lines the test reads as they come."""

    def __init__(self, settings: dict[str, Any], address: str | None, log_path: Path) -> None:
        extra = {"RAY_ADDRESS": address} if address else {}
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.ray_helpers import drive; drive()", json.dumps(settings)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
            env=child_env(**extra),
        )
        self.lines: list[str] = []

    def next_event(self, timeout_s: float) -> dict[str, Any]:
        """The next ``@@{json}`` line the driver prints (an iteration report or the summary)."""
        return json.loads(_read_line(self.proc, time.monotonic() + timeout_s, "the driver's next report"))

    def stderr_contains(self, text: str) -> bool:
        self.log.flush()
        return text in self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        self.log.close()


def drive() -> None:
    """The child side of :class:`Driver`: PPO on CartPole with the settings in ``argv[1]``.

    Reports ``@@{"epoch": n, ...}`` after every iteration (runner health, batch size) and
    ``@@{"done": true, ...}`` at the end with the runners' node ids, so the test can act
    between iterations (kill a node) and check where the runners ran.
    """
    import lightning.pytorch as pl
    import ray

    from lightning_rl.algorithms.ppo import PPO
    from lightning_rl.callbacks import StopOnReturn

    settings = json.loads(sys.argv[1])
    target = settings.pop("stop_return", None)
    max_epochs = settings.pop("max_epochs", 2)
    min_restarts = settings.pop("stop_after_restarts", 0)
    metric = settings.pop("stop_metric", "evaluation/episode_return_mean")
    pl.seed_everything(settings.get("seed", 0), verbose=False)

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write("@@" + json.dumps(payload) + "\n")
        sys.stdout.flush()

    def node_ids(group: Any) -> list[str | None]:
        """Each runner's node (None: no runner, or one on a node that was just lost and that the
        group has not found out about yet: its next call fails and it is replaced then)."""
        ids = []
        for actor in group.actors():
            node = None
            if actor is not None:
                try:
                    ref = actor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
                    node = ray.get(ref, timeout=30)
                except (ray.exceptions.RayError, TimeoutError):
                    pass
            ids.append(node)
        return ids

    last: dict[str, Any] = {"runner_nodes": [], "restarts": 0}

    class Report(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, module: Any) -> None:
            metrics = {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("env_runners/")
            }
            group = module.experience.train_group
            last.update(runner_nodes=node_ids(group), restarts=group.num_restarts)
            reply({"epoch": trainer.current_epoch, **metrics, **last})

    class StopOnReturnAfterRestarts(StopOnReturn):
        """Stops at the target only once the group has started ``min_restarts`` replacements,
        so a test sees a lost runner replaced however quickly the survivors reach the target."""

        def _check(self, trainer: pl.Trainer, pl_module: Any) -> None:
            group = pl_module.experience.train_group
            if group is None or group.num_restarts >= min_restarts:
                super()._check(trainer, pl_module)

    algo = PPO("CartPole-v1", **settings)
    callbacks: list[pl.Callback] = [Report()]
    stop_class = StopOnReturnAfterRestarts if min_restarts else StopOnReturn
    stop = stop_class(target, metric) if target is not None else None
    if stop is not None:
        callbacks.append(stop)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        check_val_every_n_epoch=5,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if target is not None else 0,
    )
    trainer.fit(algo)
    reply(
        {
            "done": True,
            "reached": None if stop is None else stop.reached_at is not None,
            **last,
            "env_steps": algo.experience.num_env_steps_sampled_lifetime,
            "eval_return": float(trainer.callback_metrics.get("evaluation/episode_return_mean", -1.0)),
        }
    )
