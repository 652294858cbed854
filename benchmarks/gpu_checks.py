"""The checks that need a GPU, as one run: learning, DDP and learner speed with CUDA.

    python benchmarks/gpu_checks.py                 # every check
    python benchmarks/gpu_checks.py --only atari_ppo dreamerv3_gpu

CI has no GPU, so these run where one is lent, as one command of a few minutes. Each check is
a subprocess with its own time limit (its own CUDA context and its own Ray, ``ray stop`` after
it), so a check that hangs or fails costs its limit and the others still run. The Trainers
keep Lightning's ``accelerator="auto"`` unless their config names one: on a machine with a GPU
the learner trains on it, and each check reports the device its learner used.

- ``ppo_cartpole_in_process``, ``ppo_cartpole_2_runners``: the README job's config to both
  targets (benchmarks/ppo_cartpole.py), in-process and with two Ray EnvRunners (the config
  has one, sized for 2 cores), on the machine as shipped: the config keeps its small learner
  on the CPU (``ddp_gpu`` against ``ddp_cpu`` says why).
- ``ddp_gpu``, ``ddp_cpu``: PPO minibatch updates/s under Lightning's DDP (NCCL on the GPU,
  gloo on the CPU) with one rank (benchmarks/_ddp_updates.py). A machine with one GPU cannot
  run DDP over several GPUs (NCCL refuses two ranks on one device); one rank still builds the
  process group, wraps the module and all-reduces every update's gradients.
- ``ray_train_gpu``: PPO learners as Ray Train workers asking for ``num_gpus_per_learner=1``
  (:mod:`lightning_rl.ray_learners`): the worker's device, its updates/s and the checkpoint it
  leaves.
- ``atari_ppo``, ``atari_appo``: Pong throughput with the Nature-CNN learner on the GPU and
  four EnvRunners (benchmarks/atari_throughput.py).
- ``dreamerv3_gpu``: DreamerV3 (XS) on CartPole to its evaluation target or for a fixed time:
  gradient updates/s on the GPU (dreamerv3_cartpole.py). Its config's comment gives the 2-core
  CPU figure (560 updates in 332 s); a CPU run on the GPU machine would spend minutes in the
  first learning iteration alone (the replay ratio's catch-up after the warm-up steps).

The sub-benchmarks save their own records under ``benchmarks/results/`` (or
``LIGHTNING_RL_BENCHMARK_RESULTS``). The last line of stdout is one JSON object: per check
``ok``, ``seconds`` and its ``result`` or ``error`` (the end of its output); also saved.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


def bench(script: str, *args: str) -> list[str]:
    return [PYTHON, str(HERE / script), *args]


def checks(scale: float) -> dict[str, dict[str, Any]]:
    """Each check's command, time limit and environment (``scale`` stretches the measured windows)."""

    def seconds(value: float) -> str:
        return str(round(value * scale, 1))

    # In order of what a short lease most needs: DDP and Ray Train on the GPU first.
    return {
        "ddp_gpu": {
            "command": bench(
                "_ddp_updates.py", "--accelerator", "gpu", "--strategy", "ddp", "--iterations", "10"
            ),
            "limit": 75,
            "out_file": True,
        },
        "ray_train_gpu": {
            "command": [PYTHON, str(Path(__file__).resolve()), "--ray-train-check"],
            "limit": 120,
        },
        "dreamerv3_gpu": {
            # The config's targets (evaluation mean 450) or the time, whichever comes first.
            "command": bench("dreamerv3_cartpole.py", "--max-seconds", seconds(100)),
            "limit": 180,
        },
        "atari_ppo": {
            "command": bench(
                "atari_throughput.py", "--algo", "ppo", "--num-env-runners", "4", "--seconds", seconds(30)
            ),
            "limit": 120,
        },
        "atari_appo": {
            "command": bench(
                "atari_throughput.py", "--algo", "appo", "--num-env-runners", "4", "--seconds", seconds(30)
            ),
            "limit": 120,
        },
        "ppo_cartpole_in_process": {
            "command": bench("ppo_cartpole.py", "--num-env-runners", "0", "--max-env-steps", "100000"),
            "limit": 90,
        },
        "ppo_cartpole_2_runners": {
            "command": bench("ppo_cartpole.py", "--num-env-runners", "2", "--max-env-steps", "100000"),
            "limit": 120,
        },
        "ddp_cpu": {
            "command": bench(
                "_ddp_updates.py", "--accelerator", "cpu", "--strategy", "ddp", "--iterations", "10"
            ),
            "limit": 60,
            "out_file": True,
        },
    }


def last_json(text: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object (the sub-benchmarks' result line)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def stop_ray() -> None:
    """Ray processes a check left behind (a killed driver does not stop its own cluster)."""
    command = [PYTHON, "-m", "ray.scripts.scripts", "stop", "--force"]
    subprocess.run(command, capture_output=True, timeout=60, check=False)


def run_check(name: str, spec: dict[str, Any], log) -> dict[str, Any]:
    command = list(spec["command"])
    out_file = None
    if spec.get("out_file"):
        out_file = Path(tempfile.mkdtemp()) / "result.json"
        command += ["--out", str(out_file)]
    env = {**os.environ, **spec.get("env", {})}
    start = time.perf_counter()
    # A session of its own, so a time-out ends the check's whole process tree (DDP ranks, Ray).
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=spec["limit"])
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        timed_out = True
    seconds = round(time.perf_counter() - start, 1)
    stop_ray()
    log.write(f"===== {name} (rc {process.returncode}, {seconds} s)\n$ {' '.join(command)}\n{output}\n")
    log.flush()
    result = json.loads(out_file.read_text()) if out_file and out_file.exists() else last_json(output)
    ok = not timed_out and process.returncode == 0 and result is not None
    entry: dict[str, Any] = {"ok": ok, "seconds": seconds}
    if ok:
        entry["result"] = result
    else:
        why = f"timed out after {spec['limit']} s" if timed_out else f"exit code {process.returncode}"
        entry["error"] = f"{why}: ...{output[-1500:]}"
    return entry


def ray_train_check(iterations: int = 5) -> None:
    """PPO learners on Ray Train with a GPU each; prints the worker's device and speed as JSON."""
    import lightning.pytorch as pl
    import torch

    from lightning_rl.algorithms.ppo import PPO
    from lightning_rl.ray_learners import RayLearnerSettings, RayTrainRun

    storage = tempfile.mkdtemp()

    class RecordLearner(pl.Callback):
        """Writes where the learner trained and how fast into the (local) storage folder."""

        def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
            self.start = (time.perf_counter(), trainer.global_step)

        def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
            seconds = time.perf_counter() - self.start[0]
            record = {
                "device": str(module.device),
                "strategy": type(trainer.strategy).__name__,
                "process_group_backend": getattr(trainer.strategy, "process_group_backend", None),
                "minibatch_updates": trainer.global_step - self.start[1],
                "fit_seconds": round(seconds, 3),
            }
            Path(storage, f"learner_rank{trainer.global_rank}.json").write_text(json.dumps(record))

    run = RayTrainRun(
        PPO,
        {
            "env": "CartPole-v1",
            "num_env_runners": 1,
            "num_envs_per_env_runner": 4,
            "train_batch_size": 1024,
            "minibatch_size": 256,
            "num_epochs": 10,
        },
        {"callbacks": [RecordLearner()], "limit_val_batches": 0},
        RayLearnerSettings(
            # Without a GPU (a trial run of this script) the same learner trains on the CPU.
            num_learners=1,
            num_gpus_per_learner=1 if torch.cuda.is_available() else 0,
            storage_path=storage,
            name="gpu_check",
        ),
    )
    start = time.perf_counter()
    try:
        metrics = run.fit(iterations)
    finally:
        run.stop()
    learners = [json.loads(p.read_text()) for p in sorted(Path(storage).glob("learner_rank*.json"))]
    checkpoints = sorted(str(p.relative_to(storage)) for p in Path(storage).rglob("*.ckpt"))
    print(
        json.dumps(
            {
                "iterations": metrics.get("training_iteration"),
                "env_steps": metrics.get("num_env_steps_sampled_lifetime"),
                "learner_ranks": metrics.get("learner_ranks"),
                "learners": learners,
                "minibatch_updates_per_s": [
                    round(r["minibatch_updates"] / r["fit_seconds"], 1) for r in learners if r["fit_seconds"]
                ],
                "checkpoints": checkpoints,
                "seconds": round(time.perf_counter() - start, 2),
            },
            sort_keys=True,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", default=None, help="run only these checks")
    parser.add_argument("--scale", type=float, default=1.0, help="stretch (or shrink) the measured windows")
    parser.add_argument("--log", type=Path, default=None, help="all checks' output (default: a temp file)")
    parser.add_argument("--ray-train-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_train_check:
        ray_train_check()
        return
    import torch

    specs = checks(args.scale)
    unknown = sorted(set(args.only or []) - set(specs))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {sorted(specs)}")
    names = args.only or list(specs)
    log_path = args.log or Path(tempfile.mkstemp(suffix=".log", prefix="gpu_checks_")[1])
    summary: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "log": str(log_path),
        "checks": {},
    }
    with log_path.open("a") as log:
        for name in names:
            entry = run_check(name, specs[name], log)
            summary["checks"][name] = entry
            print(f"{name:26s} {'ok' if entry['ok'] else 'FAILED':6s} {entry['seconds']:7.1f} s", flush=True)
            # The entry at once too: a run cut short still shows every finished check.
            print(json.dumps({name: entry}, sort_keys=True), flush=True)
    sys.path.insert(0, str(HERE))
    from _common import emit

    emit(summary)


if __name__ == "__main__":
    main()
