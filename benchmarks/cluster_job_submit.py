"""One script, a laptop and a two-node Ray cluster: `ray job submit` of examples/cluster_cartpole.py.

    python benchmarks/cluster_job_submit.py                   # ray job submit to a two-node cluster
    python benchmarks/cluster_job_submit.py --kill-node       # ... and the runners' node is lost
    python benchmarks/cluster_job_submit.py --local           # the same script, a local Ray

The cluster is real ``ray start`` processes on this machine: a head (``--num-cpus 1``, no
custom resource) and a worker node offering the custom resource ``sim``. The unchanged
example script is submitted with ``ray job submit --working-dir examples``; it joins the
cluster through the ``RAY_ADDRESS`` that Ray's job supervisor sets, asks one ``sim`` per
EnvRunner (``--runner-resource sim``), so its runners can only run on the worker node, and
stops at an evaluation mean of 450. ``--kill-node`` kills the worker node the way a lost
machine goes (SIGKILL of all its processes: node manager, log monitor, the runners) once the
job has logged iteration ``--kill-after-iteration``, and starts a replacement node with
``sim`` ``--replacement-delay-s`` later, so the lost runners have somewhere to come back to.
The job must still reach the target, with no crash.

Why a benchmark and not a test: one run takes ~2-3 minutes on the shared 2-core machine
(cluster start ~15-30 s, PPO to eval 450 ~110-125 s, job packaging), more than a test may
cost; and Ray's ``ray start`` turns 127.0.0.1 into the machine's own address (traffic stays
on the machine, but tests use only 127.0.0.1: ``tests/test_cluster.py`` covers the same
behaviour on ``ray.cluster_utils.Cluster``).

Every process this script starts is stopped by it, in a ``finally``: each node runs
``ray start --block`` in a session of its own, and stopping a node kills that session and any
process still running from the node's own temp dir. ``ray stop`` is not used: it stops
every Ray process of the user on the machine, other people's included. Under heavy load a
node may miss Ray's fixed 30 s start-up wait; a node start is retried (``--node-start-attempts``)
within a bounded wait. Last line: one JSON object (env steps and seconds to the target, where
the runners ran, runner restarts, the job's status, the load), also saved under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import emit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "examples"
SCRIPT = "cluster_cartpole.py"
RESOURCE = "sim"
READY = "This command will now block forever"  # what `ray start --block` logs once the node is up
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    """The environment of every Ray process started here (and of the job, through the head)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RUNNER_RESOURCE")}
    env.update(
        {
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
            # A head started next to ~/.ray/auth_token turns token authentication on; the other
            # nodes and the job client then have to present it.
            "RAY_AUTH_MODE": "token",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    return env


@dataclass
class Node:
    """One ``ray start --block`` process (the node's processes share its session)."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log_path: Path
    started_s: float = 0.0
    stopped: bool = field(default=False)

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: its session, and anything run from its temp dir."""
        found = []
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid == os.getpid():
                    continue
                if os.getsid(proc.pid) == self.proc.pid or any(marker in arg for arg in proc.cmdline()):
                    found.append(proc)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return found

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL every process of the node (a lost machine), and wait until they are gone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.processes()
            if not left:
                break
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            time.sleep(0.5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.stopped = True


class LoopbackCluster:
    """A head and worker nodes started with ``ray start`` on 127.0.0.1, each in its own temp dir."""

    def __init__(self, root: Path, start_timeout_s: float, attempts: int) -> None:
        self.root = root
        self.start_timeout_s = start_timeout_s
        self.attempts = attempts
        self.nodes: list[Node] = []
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.env = ray_env()

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_args(self) -> list[str]:
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        flags = [f"{k}={v}" for k, v in ports.items()]
        return [*flags, "--node-ip-address=127.0.0.1", "--disable-usage-stats"]

    def start_head(self) -> Node:
        args = [
            "--head",
            f"--port={self.gcs_port}",
            "--num-cpus=1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        ]
        return self._start("head", args)

    def start_worker(self, name: str, cpus: int) -> Node:
        resources = json.dumps({RESOURCE: cpus, f"node_{name}": 1})  # the second names the node
        args = [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={cpus}", f"--resources={resources}"]
        return self._start(name, args)

    def _start(self, name: str, args: list[str]) -> Node:
        last = ""
        for attempt in range(1, self.attempts + 1):
            temp_dir = Path(tempfile.mkdtemp(prefix=f"{name[:6]}", dir=self.root))
            log_path = self.root / f"{name}-{attempt}.log"
            command = ["ray", "start", "--block", f"--temp-dir={temp_dir}", *self._node_args(), *args]
            start = time.monotonic()
            with log_path.open("w") as log:
                proc = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
                )
            node = Node(name, proc, temp_dir, log_path)
            self.nodes.append(node)
            deadline = start + self.start_timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                if READY in log_path.read_text(errors="replace"):
                    node.started_s = round(time.monotonic() - start, 1)
                    print(f"node {name} up in {node.started_s} s", file=sys.stderr, flush=True)
                    return node
                time.sleep(0.5)
            last = log_path.read_text(errors="replace")[-2000:]
            node.kill()
            print(f"node {name}: start attempt {attempt} failed", file=sys.stderr, flush=True)
        raise RuntimeError(f"ray start of node {name!r} failed {self.attempts} times; last log:\n{last}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if not node.stopped:
                node.kill()


def job_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(cluster: LoopbackCluster, job_id: str, script_args: list[str]) -> None:
    """``ray job submit`` exactly as a user types it (no waiting: this script follows the job)."""
    command = [
        "ray",
        "job",
        "submit",
        f"--address={cluster.dashboard}",
        f"--submission-id={job_id}",
        "--no-wait",
        f"--working-dir={EXAMPLES}",
        "--",
        "python",
        SCRIPT,
        *script_args,
    ]
    subprocess.run(command, env=cluster.env, check=True, capture_output=True, text=True, timeout=300)


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return None


def logged_iteration(text: str) -> int:
    """The last ``iteration N`` progress line the example printed (-1 before the first)."""
    last = -1
    for line in text.splitlines():
        if line.startswith("iteration "):
            with contextlib.suppress(IndexError, ValueError):
                last = int(line.split()[1])
    return last


def node_names(client_address: str) -> dict[str, str]:
    """Ray node id -> the name this script gave the node (by its naming resource)."""
    from ray.util.state import list_nodes

    names = {}
    for node in list_nodes(address=client_address, detail=True, raise_on_missing_output=False):
        resources = node.resources_total or {}
        named = [k[len("node_") :] for k in resources if k.startswith("node_") and not k.startswith("node:")]
        names[node.node_id] = named[0] if named else "head"
    return names


def run_cluster(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = LoopbackCluster(root, args.node_start_timeout_s, args.node_start_attempts)
    variant = "ray job submit, node killed" if args.kill_node else "ray job submit"
    result: dict[str, Any] = {"variant": variant}
    try:
        clock = time.monotonic()
        cluster.start_head()
        worker = cluster.start_worker("worker", args.worker_cpus)
        result["cluster_start_seconds"] = round(time.monotonic() - clock, 1)
        client = job_client(cluster.dashboard)
        job_id = f"cartpole-{int(time.time())}"
        script_args = ["--runner-resource", RESOURCE, "--seed", str(args.seed)]
        clock = time.monotonic()
        submit(cluster, job_id, script_args)
        deadline = clock + args.job_timeout_s
        killed_at = None
        kill_clock = 0.0
        replacement = None
        status = "PENDING"
        logs = ""
        while time.monotonic() < deadline:
            status = str(client.get_job_status(job_id).value)
            logs = client.get_job_logs(job_id)
            if status in TERMINAL:
                break
            if args.kill_node and killed_at is None and logged_iteration(logs) >= args.kill_after_iteration:
                killed_at = logged_iteration(logs)
                print(f"killing node worker after iteration {killed_at}", file=sys.stderr, flush=True)
                worker.kill()
                kill_clock = time.monotonic()
            waited = time.monotonic() - kill_clock
            if killed_at is not None and replacement is None and waited >= args.replacement_delay_s:
                replacement = cluster.start_worker("replacement", args.worker_cpus)
            time.sleep(1.0)
        else:
            client.stop_job(job_id)
            status = f"TIMED OUT after {args.job_timeout_s} s"
        summary = last_json(logs) or {}
        names = {}
        with contextlib.suppress(Exception):  # only labels; a failure here must not hide the result
            names = node_names(cluster.dashboard)
        result.update(
            {
                "job_status": status,
                "job_wall_seconds": round(time.monotonic() - clock, 1),
                "script": summary,
                "runner_nodes": [names.get(n, n) for n in summary.get("runner_nodes", [])],
                "killed_after_iteration": killed_at,
                "replacement_node_started": replacement is not None,
                "job_log_last_line": (logs.strip().splitlines() or [""])[-1],
            }
        )
        if args.keep_logs or status != "SUCCEEDED":
            (root / "job.log").write_text(logs)
    finally:
        cluster.stop()
    return result


def run_local(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The same script with no cluster: lightning-rl starts a local Ray offering the resource."""
    env = {k: v for k, v in ray_env().items() if k != "RAY_AUTH_MODE"}
    clock = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, "--runner-resource", RESOURCE, "--seed", str(args.seed)],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=args.job_timeout_s)
        status = "SUCCEEDED" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        out, err, status = "", "", f"TIMED OUT after {args.job_timeout_s} s"
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the local Ray it started, if anything is left
        proc.wait()
    if args.keep_logs or status != "SUCCEEDED":
        (root / "local.log").write_text(out + err)
    summary = last_json(out) or {}
    return {
        "variant": "local",
        "job_status": status,
        "job_wall_seconds": round(time.monotonic() - clock, 1),
        "script": summary,
        "runner_nodes": ["local" for _ in summary.get("runner_nodes", [])],
        "job_log_last_line": (out.strip().splitlines() or [""])[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--kill-node", action="store_true", help="lose the runners' node mid-run")
    variant.add_argument("--local", action="store_true", help="run the script on a local Ray instead")
    parser.add_argument("--kill-after-iteration", type=int, default=5)
    parser.add_argument("--replacement-delay-s", type=float, default=20.0)
    parser.add_argument("--worker-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--node-start-timeout-s", type=float, default=90.0)
    parser.add_argument("--node-start-attempts", type=int, default=3)
    parser.add_argument("--job-timeout-s", type=float, default=900.0)
    parser.add_argument("--keep-logs", type=Path, default=None, help="keep node and job logs in this folder")
    args = parser.parse_args()
    # Before Ray is imported here (it reads the mode once): the head started next to
    # ~/.ray/auth_token asks this process's job client for the token too (see ray_env).
    os.environ["RAY_AUTH_MODE"] = "token"
    root = Path(tempfile.mkdtemp(prefix="ljs", dir="/tmp"))  # short: Ray's socket paths are length-limited
    try:
        result = run_local(args, root) if args.local else run_cluster(args, root)
    finally:
        if args.keep_logs:
            keep = shutil.ignore_patterns("session*")
            shutil.copytree(root, args.keep_logs, dirs_exist_ok=True, ignore=keep)
        shutil.rmtree(root, ignore_errors=True)
    script = result.get("script", {})
    result.update(
        {
            "reached": bool(script.get("reached")) and result["job_status"] == "SUCCEEDED",
            "env_steps_to_target": script.get("env_steps_to_target"),
            "script_seconds": script.get("seconds"),
            "final_eval_return": script.get("final_eval_return"),
            "runner_restarts": script.get("runner_restarts"),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    )
    emit(result)
    if not result["reached"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
