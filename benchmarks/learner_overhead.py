"""What one PPO minibatch update costs through the framework, against a plain PyTorch loop.

    python benchmarks/learner_overhead.py [--iterations 12] [--rounds 2]

Same process, same data, same thread count (1, the learner's default), alternating rounds so
that a load change on the machine hits both sides alike:

- **framework**: PPO from ``configs/ppo/cartpole.yaml`` (CartPole shapes, 64x64 tanh MLPs for
  the policy and the value function, minibatch 256), in-process sampling, trained by a real
  ``Trainer.fit`` for ``--iterations`` iterations. A callback times every minibatch from
  ``on_train_batch_start`` to ``on_train_batch_end`` (``step``: the algorithm's
  ``training_step`` with torchrl's ClipPPOLoss, backward, gradient clipping, Lightning's
  optimizer and LR-scheduler steps and its hooks) and from one minibatch's start to the next
  one's in the same iteration (``cycle``: the step plus fetching the next minibatch from the
  DataModule; an iteration's first minibatch, which waits for sampling and GAE, is not a cycle).
  The first round's first iterations are warm-up and not counted.
- **plain**: the same minibatches (captured from the framework's first iterations), fed to
  hand-written ``nn.Sequential`` networks of the same shape: forward, the same clipped
  surrogate (advantages standardised per minibatch, clip 0.2) plus 0.5 x the squared value
  error, backward, gradient-norm clip 0.5, Adam (eps 1e-5) and a per-step LambdaLR, the loss
  statistics (approximate KL, clip fraction) kept as tensors like the framework keeps them.

Prints per-update milliseconds (median and mean over all counted updates) and the ratios
framework/plain; the last line is one JSON object (saved like the other benchmarks).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from _common import emit
from torch import nn

from lightning_rl.algorithms.ppo import PPO

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ppo" / "cartpole.yaml"
LOG_PROB_KEYS = ("action_log_prob", "sample_log_prob")


class UpdateClock(pl.Callback):
    """Per-minibatch step and cycle times; keeps copies of the first ``capture`` minibatches."""

    def __init__(self, warmup_iterations: int, capture: int) -> None:
        self.warmup_iterations = warmup_iterations
        self.capture = capture
        self.captured: list[Any] = []
        self.steps: list[float] = []
        self.cycles: list[float] = []
        self._start: float | None = None
        self._capture_seconds = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._start = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        counted = trainer.current_epoch >= self.warmup_iterations
        if self._start is not None and counted:
            self.cycles.append(now - self._start - self._capture_seconds)
        self._capture_seconds = 0.0
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        end = time.perf_counter()
        if trainer.current_epoch >= self.warmup_iterations:
            self.steps.append(end - self._start)
        if len(self.captured) < self.capture:
            self.captured.append(batch.detach().clone())
            self._capture_seconds = time.perf_counter() - end


def framework_round(model_args: dict[str, Any], iterations: int, warmup: int, capture: int) -> UpdateClock:
    pl.seed_everything(0, verbose=False)
    algo = PPO(**model_args)
    clock = UpdateClock(warmup, capture)
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


def plain_round(batches: list[Any], updates: int, model_args: dict[str, Any]) -> list[float]:
    """``updates`` plain-PyTorch PPO updates cycling over ``batches``; seconds per update."""
    torch.manual_seed(0)
    first = batches[0]
    obs_dim, n_actions = first["observation"].shape[-1], 2
    hidden = list((model_args.get("model_config") or {}).get("fcnet_hiddens", [64, 64]))
    policy = mlp([obs_dim, *hidden, n_actions])
    value = mlp([obs_dim, *hidden, 1])
    params = [*policy.parameters(), *value.parameters()]
    optimizer = torch.optim.Adam(params, lr=model_args.get("lr", 1e-3), eps=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    clip = float(model_args.get("clip_param", 0.2))
    vf_coeff = float(model_args.get("vf_loss_coeff", 0.5))
    log_prob_key = next(k for k in LOG_PROB_KEYS if k in first.keys())  # noqa: SIM118 (TensorDict)
    # Plain tensors, as a hand-written loop would hold them.
    data = [
        (
            b["observation"],
            b["action"].long().reshape(-1),
            b[log_prob_key].reshape(-1),
            b["advantage"].reshape(-1),
            b["value_target"].reshape(-1),
        )
        for b in batches
    ]
    stats: list[torch.Tensor] = []
    times: list[float] = []
    for i in range(updates):
        obs, action, old_log_prob, advantage, target = data[i % len(data)]
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
        scheduler.step()
        with torch.no_grad():
            clip_fraction = ((ratio - 1).abs() > clip).float().mean()
            stats.append(torch.stack([loss.detach(), (-log_ratio).mean(), clip_fraction]))
        times.append(time.perf_counter() - start)
    assert torch.isfinite(torch.stack(stats)).all()
    return times


def ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(1000 * statistics.median(values), 4),
        "mean_ms": round(1000 * statistics.fmean(values), 4),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=12, help="training iterations per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-iterations", type=int, default=2)
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()

    config = yaml.safe_load(args.config.read_text())
    model_args = {**config["model"]["init_args"], "num_env_runners": 0, "seed": 0}
    torch.set_num_threads(1)
    steps: list[float] = []
    cycles: list[float] = []
    plain: list[float] = []
    batches: list[Any] = []
    for round_index in range(args.rounds):
        clock = framework_round(model_args, args.iterations, args.warmup_iterations, 0 if batches else 64)
        batches = batches or clock.captured
        steps += clock.steps
        cycles += clock.cycles
        torch.set_num_threads(1)
        times = plain_round(batches, len(clock.steps), model_args)
        plain += times[len(times) // 10 :]  # the first tenth warms the plain loop up
        print(
            f"[learner_overhead] round {round_index}: framework step {ms(clock.steps)['median_ms']} ms, "
            f"cycle {ms(clock.cycles)['median_ms']} ms, plain {ms(times)['median_ms']} ms (medians)",
            flush=True,
        )
    first = batches[0]
    result = {
        "minibatch_size": int(first.batch_size[0]),
        "observation_shape": list(first["observation"].shape[1:]),
        "hidden": list((model_args.get("model_config") or {}).get("fcnet_hiddens", [64, 64])),
        "torch_threads": torch.get_num_threads(),
        "framework_step": ms(steps),
        "framework_cycle": ms(cycles),
        "plain": ms(plain),
        "step_over_plain_median": round(statistics.median(steps) / statistics.median(plain), 3),
        "cycle_over_plain_median": round(statistics.median(cycles) / statistics.median(plain), 3),
        "step_over_plain_mean": round(statistics.fmean(steps) / statistics.fmean(plain), 3),
        "cycle_over_plain_mean": round(statistics.fmean(cycles) / statistics.fmean(plain), 3),
    }
    print(
        f"[learner_overhead] framework/plain per update (median): step {result['step_over_plain_median']}x, "
        f"cycle {result['cycle_over_plain_median']}x",
        flush=True,
    )
    emit(result)


if __name__ == "__main__":
    main()
