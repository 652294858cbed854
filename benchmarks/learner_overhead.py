"""What one PPO minibatch update costs through the framework, against a plain PyTorch loop.

    python benchmarks/learner_overhead.py [--iterations 24] [--rounds 1]

One process, the same data, the same thread count (1, the learner's default). The two sides
take turns after every training iteration, so a load change on the shared machine hits both
alike:

- **framework**: PPO from ``configs/ppo/cartpole.yaml`` (CartPole shapes, 64x64 tanh MLPs for
  the policy and the value function, 20 updates per iteration) with RL-Zoo's 256-sample batch
  and minibatch instead of the config's 512 (the size this measure was defined with), in-process
  sampling, trained by a real ``Trainer.fit``. A callback times:

  - ``update``: from one update's ``on_before_backward`` to the next one's in the same
    iteration: backward with Lightning's hooks, the non-finite guard, gradient clipping, the
    optimizer and LR-scheduler steps, cutting the next minibatch out of the iteration's batch
    and its loss (PPO runs all of an iteration's updates inside one ``training_step``; a
    per-minibatch ``training_step`` adds Lightning's batch loop and the DataLoader fetch here);
  - ``step``: the iteration's ``training_step`` time(s) (``on_train_batch_start`` to
    ``on_train_batch_end``, hooks included: the algorithm logs the sampling metrics at the
    first batch) divided by its updates;
  - ``cycle``: from the iteration's first ``on_train_batch_start`` to the next iteration's
    start, divided by its updates: ``step`` plus what runs once per iteration after it
    (learner-stats logging, epoch-end hooks, Lightning's epoch bookkeeping).

  Sampling and GAE run before the first ``on_train_batch_start`` (``ppo_cartpole.py``'s
  ``sampling`` and ``rollout_processing``) and are not counted; nor are the warm-up iterations.
- **plain**: after every framework iteration, as many updates on the minibatches captured
  from the first iteration (cut again from its batch with a copy of its shuffling
  generator), fed to hand-written ``nn.Sequential`` networks of the same shape: forward, the
  same clipped surrogate (advantages standardised per minibatch, clip 0.2) plus 0.5 x the
  squared value error, backward, gradient-norm clip 0.5, Adam (eps 1e-5) and a per-step
  LambdaLR, the loss statistics (approximate KL, clip fraction) kept as tensors like the
  framework keeps them. Each update is timed (``plain_update``) and averaged per iteration's
  worth (``plain``, what ``step`` and ``cycle`` are compared with).

Prints per-update milliseconds and the ratios framework/plain (``update_over_plain_median``:
the per-update medians; ``step_/cycle_over_plain_*``: per-iteration averages); the last line
is one JSON object (saved like the other benchmarks).

``gae``: PPO's GAE function (``algorithms/ppo/gae.py``) against torchrl's
``vec_generalized_advantage_estimate`` on the config's ``[8, 32, 1]`` batch and on one long
``[1, 2048, 1]`` episode stream (ms per call), and what importing ``torchrl.objectives`` costs
a fresh process that already has torch, tensordict and Lightning (the reason PPO has its own).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from _common import emit
from torch import nn

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.algorithms.ppo.gae import generalized_advantage_estimate
from lightning_rl.data.on_policy import IterationBatch

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ppo" / "cartpole.yaml"
LOG_PROB_KEYS = ("action_log_prob", "sample_log_prob")


def gae_costs(repeats: int = 200) -> dict[str, Any]:
    """Per-call ms of PPO's GAE and torchrl's estimator, and torchrl.objectives' import cost."""
    probe = (
        "import time, torch, tensordict, lightning.pytorch; start = time.perf_counter(); "
        "import torchrl.objectives.value.functional; print(time.perf_counter() - start)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    from torchrl.objectives.value.functional import vec_generalized_advantage_estimate

    result: dict[str, Any] = {
        "torchrl_objectives_import_s": round(float(done.stdout.strip().splitlines()[-1]), 3)
        if done.returncode == 0
        else None
    }
    for envs, steps in ((8, 32), (1, 2048)):
        g = torch.Generator().manual_seed(0)
        value, next_value, reward = (torch.randn(envs, steps, 1, generator=g) for _ in range(3))
        terminated = torch.rand(envs, steps, 1, generator=g) < 0.02
        done_ = terminated | (torch.rand(envs, steps, 1, generator=g) < 0.02)
        args = (value, next_value, reward, done_, terminated)
        gamma, lambda_ = torch.tensor(0.98), torch.tensor(0.8)
        calls = {
            "ours_ms": lambda: generalized_advantage_estimate(0.98, 0.8, *args),  # noqa: B023
            "torchrl_ms": lambda: vec_generalized_advantage_estimate(gamma, lambda_, *args, time_dim=-2),  # noqa: B023
        }
        shape = f"{envs}x{steps}"
        result[shape] = {}
        for name, call in calls.items():
            for _ in range(5):
                call()
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            result[shape][name] = round((time.perf_counter() - start) / repeats * 1e3, 4)
    return result


class PlainLoop:
    """Plain-PyTorch PPO updates (see the module docstring) cycling over captured minibatches."""

    def __init__(self, batches: list[Any], model_args: dict[str, Any]) -> None:
        torch.manual_seed(0)
        first = batches[0]
        obs_dim, n_actions = first["observation"].shape[-1], 2
        hidden = list((model_args.get("model_config") or {}).get("fcnet_hiddens", [64, 64]))
        self.policy = mlp([obs_dim, *hidden, n_actions])
        self.value = mlp([obs_dim, *hidden, 1])
        self.params = [*self.policy.parameters(), *self.value.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=model_args.get("lr", 1e-3), eps=1e-5)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.clip = float(model_args.get("clip_param", 0.2))
        self.vf_coeff = float(model_args.get("vf_loss_coeff", 0.5))
        log_prob_key = next(k for k in LOG_PROB_KEYS if k in first.keys())  # noqa: SIM118 (TensorDict)
        # Plain tensors, as a hand-written loop would hold them.
        self.data = [
            (
                b["observation"],
                b["action"].long().reshape(-1),
                b[log_prob_key].reshape(-1),
                b["advantage"].reshape(-1),
                b["value_target"].reshape(-1),
            )
            for b in batches
        ]
        self.index = 0

    def run(self, updates: int) -> list[float]:
        """``updates`` updates; seconds of each."""
        policy, value, params, optimizer = self.policy, self.value, self.params, self.optimizer
        clip, vf_coeff = self.clip, self.vf_coeff
        stats: list[torch.Tensor] = []
        times: list[float] = []
        with torch.enable_grad():
            for _ in range(updates):
                obs, action, old_log_prob, advantage, target = self.data[self.index % len(self.data)]
                self.index += 1
                start = time.perf_counter()
                log_prob = torch.distributions.Categorical(logits=policy(obs)).log_prob(action)
                log_ratio = log_prob - old_log_prob
                ratio = log_ratio.exp()
                adv = (advantage - advantage.mean()) / advantage.std().clamp_min(1e-6)
                surrogate = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
                value_loss = vf_coeff * (value(obs).squeeze(-1) - target).pow(2).mean()
                loss = surrogate + value_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                optimizer.step()
                self.scheduler.step()
                with torch.no_grad():
                    clip_fraction = ((ratio - 1).abs() > clip).float().mean()
                    stats.append(torch.stack([loss.detach(), (-log_ratio).mean(), clip_fraction]))
                times.append(time.perf_counter() - start)
        assert torch.isfinite(torch.stack(stats)).all()
        return times


class UpdateClock(pl.Callback):
    """Times the framework's updates per iteration and, between iterations, as many plain
    updates on the minibatches captured from the first iteration."""

    def __init__(self, warmup_iterations: int, capture: int, model_args: dict[str, Any]) -> None:
        self.warmup_iterations = warmup_iterations
        self.capture = capture
        self.model_args = model_args
        self.captured: list[Any] = []
        self.plain: PlainLoop | None = None
        self.steps: list[float] = []  # per iteration: training-step seconds / updates
        self.cycles: list[float] = []  # per iteration: learning seconds / updates
        self.updates: list[float] = []  # one backward to the next within an iteration
        self.plain_chunks: list[float] = []  # per iteration: plain seconds / updates
        self.plain_updates: list[float] = []  # each plain update
        self.num_updates = 0  # updates in the counted iterations
        self._reset()

    def _reset(self) -> None:
        self._first_batch_start: float | None = None
        self._batch_start = 0.0
        self._step_seconds = 0.0
        self._updates = 0
        self._last_backward: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._close_iteration(trainer, trainer.current_epoch - 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._close_iteration(trainer, trainer.current_epoch)

    def _close_iteration(self, trainer: pl.Trainer, epoch: int) -> None:
        """The finished iteration's figures, then the plain loop's share right after it (same load)."""
        if self._first_batch_start is None or not self._updates:
            return
        end = time.perf_counter()
        counted = epoch >= self.warmup_iterations
        updates = self._updates
        if counted:
            self.steps.append(self._step_seconds / updates)
            self.cycles.append((end - self._first_batch_start) / updates)
            self.num_updates += updates
        self._reset()
        if not self.captured:
            return
        if self.plain is None:
            self.plain = PlainLoop(self.captured, self.model_args)
            self.plain.run(updates)  # warm-up
        times = self.plain.run(updates)
        if counted:
            self.plain_chunks.append(statistics.fmean(times))
            self.plain_updates.extend(times)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if len(self.captured) < self.capture:
            self.captured.extend(minibatch_copies(batch)[: self.capture - len(self.captured)])
        self._batch_start = time.perf_counter()
        if self._first_batch_start is None:
            self._first_batch_start = self._batch_start

    def on_before_backward(self, trainer: pl.Trainer, pl_module: Any, loss: Any) -> None:
        now = time.perf_counter()
        if self._last_backward is not None and trainer.current_epoch >= self.warmup_iterations:
            self.updates.append(now - self._last_backward)
        self._last_backward = now

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._step_seconds += time.perf_counter() - self._batch_start
        self._updates += len(batch) if isinstance(batch, IterationBatch) else 1


def minibatch_copies(batch: Any) -> list[Any]:
    """The minibatches PPO will train on from this batch, cut with a copy of its generator."""
    if not isinstance(batch, IterationBatch):
        return [batch.detach().clone()]
    generator = torch.Generator()
    generator.set_state(batch.generator.get_state())
    replay = IterationBatch(
        batch.data.detach().clone(),
        batch.minibatch_size,
        batch.num_epochs,
        batch.minibatches_per_epoch,
        generator,
    )
    return list(replay.minibatches())


def framework_round(model_args: dict[str, Any], iterations: int, warmup: int, capture: int) -> UpdateClock:
    pl.seed_everything(0, verbose=False)
    algo = PPO(**model_args)
    clock = UpdateClock(warmup, capture, model_args)
    trainer = pl.Trainer(
        max_epochs=iterations,
        check_val_every_n_epoch=10**9,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(algo)
    return clock


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(1000 * statistics.median(values), 4),
        "mean_ms": round(1000 * statistics.fmean(values), 4),
        "n": len(values),
    }


def ratio(a: list[float], b: list[float], stat: Any) -> float:
    return round(stat(a) / stat(b), 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=24, help="training iterations per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup-iterations", type=int, default=2)
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()

    config = yaml.safe_load(args.config.read_text())
    # The measure is a 256-sample minibatch (RL-Zoo's CartPole PPO); the shipped config
    # trains on 512-sample batches, so the batch is set here rather than read from it.
    model_args = {
        **config["model"]["init_args"],
        "num_env_runners": 0,
        "seed": 0,
        "train_batch_size": 256,
        "minibatch_size": 256,
    }
    torch.set_num_threads(1)
    clocks = []
    for round_index in range(args.rounds):
        clock = framework_round(model_args, args.iterations, args.warmup_iterations, 64)
        clocks.append(clock)
        print(
            f"[learner_overhead] round {round_index}: update {ms(clock.updates)['median_ms']} ms vs plain"
            f" {ms(clock.plain_updates)['median_ms']} ms; per iteration: step"
            f" {ms(clock.steps)['median_ms']} ms, cycle {ms(clock.cycles)['median_ms']} ms"
            f" vs plain {ms(clock.plain_chunks)['median_ms']} ms",
            flush=True,
        )
    steps = [x for c in clocks for x in c.steps]
    cycles = [x for c in clocks for x in c.cycles]
    updates = [x for c in clocks for x in c.updates]
    plain = [x for c in clocks for x in c.plain_chunks]
    plain_updates = [x for c in clocks for x in c.plain_updates]
    first = clocks[0].captured[0]
    result = {
        "minibatch_size": int(first.batch_size[0]),
        "observation_shape": list(first["observation"].shape[1:]),
        "hidden": list((model_args.get("model_config") or {}).get("fcnet_hiddens", [64, 64])),
        "torch_threads": torch.get_num_threads(),
        "updates_per_iteration": round(sum(c.num_updates for c in clocks) / max(1, len(steps))),
        "framework_update": ms(updates),
        "plain_update": ms(plain_updates),
        "update_over_plain_median": ratio(updates, plain_updates, statistics.median),
        "framework_step": ms(steps),
        "framework_cycle": ms(cycles),
        "plain": ms(plain),
        "step_over_plain_median": ratio(steps, plain, statistics.median),
        "cycle_over_plain_median": ratio(cycles, plain, statistics.median),
        "step_over_plain_mean": ratio(steps, plain, statistics.fmean),
        "cycle_over_plain_mean": ratio(cycles, plain, statistics.fmean),
        "gae": gae_costs(),
    }
    print(
        "[learner_overhead] framework/plain per update (median):"
        f" update {result['update_over_plain_median']}x, step {result['step_over_plain_median']}x,"
        f" cycle {result['cycle_over_plain_median']}x",
        flush=True,
    )
    emit(result)


if __name__ == "__main__":
    main()
