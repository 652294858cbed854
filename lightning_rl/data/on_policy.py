"""On-policy experience (PPO and friends): sample, run the learner connectors, minibatch.

One ``iter()`` of the training DataLoader is one training iteration (one Lightning epoch):
sample ``train_batch_size`` steps with the current weights, let the source (the algorithm)
post-process the whole ``[num_envs, T]`` batch (GAE, ...), then yield shuffled minibatches for
``num_epochs`` passes. The number of minibatches per iteration is fixed by the config, so
every DDP rank yields the same count and the gradient all-reduce can never wait on an
empty shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from tensordict import TensorDict
from tensordict import pad as tensordict_pad
from torch.utils.data import DataLoader, IterableDataset

from lightning_rl.data.experience import ExperienceDataModule, identity_collate


class OnPolicyDataModule(ExperienceDataModule):
    """Fresh samples every iteration, reused for ``num_epochs`` passes of minibatches."""

    def train_batch_size(self) -> int:
        return self._rows() * self.rollout_fragment_length()

    def minibatches_per_iteration(self) -> int:
        settings = self.settings
        minibatch = settings.minibatch_size or self.train_batch_size()
        length = self.source.sequence_length()
        if length:
            # Recurrent models learn from whole sequences: count them, padding included.
            sequences = self._rows() * math.ceil(self.rollout_fragment_length() / length)
            return settings.num_epochs * math.ceil(sequences / max(1, minibatch // length))
        return settings.num_epochs * math.ceil(self.train_batch_size() / minibatch)

    def _rows(self) -> int:
        settings = self.settings
        return max(1, settings.num_env_runners) * settings.num_envs_per_env_runner

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_OnPolicyDataset(self), batch_size=None, collate_fn=identity_collate)


class _OnPolicyDataset(IterableDataset):
    def __init__(self, datamodule: OnPolicyDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.minibatches_per_iteration()

    def __iter__(self) -> Iterator[Any]:
        datamodule = self.datamodule
        source = datamodule.source
        settings = datamodule.settings
        batch = datamodule.sample()
        with torch.no_grad():
            if isinstance(batch, dict):
                batch = source.process_rollout({pid: b.to(source.device) for pid, b in batch.items()})
            else:
                batch = source.process_rollout(batch.to(source.device))
        num_epochs = settings.num_epochs
        per_epoch = len(self) // num_epochs
        generator = source.minibatch_generator
        length = source.sequence_length()
        if length and not isinstance(batch, dict):
            sequences = to_sequences(batch, length)
            per_minibatch = max(1, (settings.minibatch_size or length) // length)
            for _ in range(num_epochs):
                order = torch.randperm(sequences.batch_size[0], generator=generator)
                for i in range(per_epoch):
                    yield sequences[_wrapped(order, i, per_minibatch).to(sequences.device)]
            return
        if not isinstance(batch, dict):
            flat = batch.reshape(-1)
            minibatch = settings.minibatch_size or flat.batch_size[0]
            for _ in range(num_epochs):
                order = torch.randperm(flat.batch_size[0], generator=generator)
                for i in range(per_epoch):
                    yield flat[_wrapped(order, i, minibatch).to(flat.device)]
            return
        # Multi-agent: each policy's [M_p] transitions split into the same number of chunks, so
        # the number of optimizer steps per iteration is fixed whatever the agents did.
        flat_per_policy = {pid: b.reshape(-1) for pid, b in batch.items() if b.numel() > 0}
        for _ in range(num_epochs):
            orders = {
                pid: torch.randperm(b.batch_size[0], generator=generator)
                for pid, b in flat_per_policy.items()
            }
            for i in range(per_epoch):
                yield {
                    pid: b[_wrapped(orders[pid], i, math.ceil(b.batch_size[0] / per_epoch)).to(b.device)]
                    for pid, b in flat_per_policy.items()
                }


def to_sequences(batch: TensorDict, length: int) -> TensorDict:
    """``[N, T]`` rollouts -> ``[N * ceil(T / length), length]`` sequences with a ``mask``.

    Each sequence starts where the previous one ended, so its first step's stored recurrent
    state is the state it must be replayed from; when ``T`` is not a multiple of ``length`` the
    last sequence of every row is padded, and ``mask`` (False there) keeps padding out of the loss.
    """
    n, t = batch.batch_size
    batch = batch.clone(False)
    batch["mask"] = torch.ones(n, t, dtype=torch.bool, device=batch.device)
    pad = (-t) % length
    if pad:
        batch = tensordict_pad(batch, [0, 0, 0, pad])
    return batch.reshape(n * (t + pad) // length, length)


def _wrapped(order: torch.Tensor, index: int, size: int) -> torch.Tensor:
    """Minibatch ``index`` of ``size`` from a permutation; always full (wraps around)."""
    return order[(torch.arange(size) + index * size) % order.shape[0]]
