"""On-policy experience (PPO and friends): sample, run the learner connectors, minibatch.

One ``iter()`` of the training DataLoader is one training iteration (one Lightning epoch):
sample ``train_batch_size`` steps with the current weights, let the algorithm post-process
the whole ``[num_envs, T]`` batch (GAE, ...), then yield shuffled minibatches for
``num_epochs`` passes. The number of minibatches per iteration is fixed by the config, so
every DDP rank yields the same count and the gradient all-reduce can never wait on an
empty shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from lightning_rl.data.experience import ExperienceDataModule, identity_collate


class OnPolicyDataModule(ExperienceDataModule):
    """Fresh samples every iteration, reused for ``num_epochs`` passes of minibatches."""

    def train_batch_size(self) -> int:
        runners = max(1, self.setting("num_env_runners"))
        return runners * self.setting("num_envs_per_env_runner") * self.rollout_fragment_length()

    def minibatches_per_iteration(self) -> int:
        minibatch = self.setting("minibatch_size") or self.train_batch_size()
        return self.setting("num_epochs") * math.ceil(self.train_batch_size() / minibatch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_OnPolicyDataset(self), batch_size=None, collate_fn=identity_collate)


class _OnPolicyDataset(IterableDataset):
    def __init__(self, datamodule: OnPolicyDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.minibatches_per_iteration()

    def __iter__(self) -> Iterator[TensorDict]:
        datamodule = self.datamodule
        algorithm = datamodule.algorithm
        batch = datamodule.sample()
        with torch.no_grad():
            batch = algorithm.process_rollout(batch.to(algorithm.device))
        flat = batch.reshape(-1)
        size = flat.batch_size[0]
        expected = len(self)
        minibatch = datamodule.setting("minibatch_size") or size
        num_epochs = datamodule.setting("num_epochs")
        per_epoch = expected // num_epochs
        generator = algorithm.minibatch_generator
        for _ in range(num_epochs):
            order = torch.randperm(size, generator=generator)
            for i in range(per_epoch):
                # Always a full minibatch: wrap around instead of yielding a short last one.
                index = order[(torch.arange(minibatch) + i * minibatch) % size]
                yield flat[index.to(flat.device)]
