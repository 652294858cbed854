"""On-policy experience (PPO and friends): sample, run the learner connectors, minibatch.

One ``iter()`` of the training DataLoader is one training iteration (one Lightning epoch):
sample ``train_batch_size`` steps with the current weights, let the source (the algorithm)
post-process the whole ``[num_envs, T]`` batch (GAE, ...), then serve it for ``num_epochs``
passes of shuffled minibatches. The number of minibatches per iteration is fixed by the
config, so every DDP rank takes the same number of optimizer steps and the gradient
all-reduce can never wait on an empty shard.

Two ways to serve an iteration, chosen by the source:

* a source whose ``learns_whole_iterations`` is True (PPO) gets **one** item per iteration, an
  :class:`IterationBatch`: the processed batch plus its minibatch plan. The algorithm runs
  every minibatch update inside one ``training_step``: on small networks Lightning's
  per-batch loop (fetch, hooks, progress tracking, logging) costs as much as the update;
* any other source (automatic optimisation, e.g. an A2C plugin) gets the minibatches one by
  one, one ``training_step`` each.

Both draw the same permutations from the source's ``minibatch_generator`` in the same order
(one ``randperm`` per policy per pass), so the minibatches and the generator state that
checkpoints carry are the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
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

    def yields_whole_iterations(self) -> bool:
        """Whether the source learns from one :class:`IterationBatch` per iteration (its
        ``learns_whole_iterations`` attribute; absent means minibatch by minibatch)."""
        return bool(getattr(self.source, "learns_whole_iterations", False))

    def _rows(self) -> int:
        settings = self.settings
        return max(1, settings.num_env_runners) * settings.num_envs_per_env_runner

    def iteration_batch(self) -> IterationBatch:
        """Sample one iteration, post-process it with the source, and plan its minibatches."""
        source = self.source
        settings = self.settings
        batch = self.sample()
        with torch.no_grad():
            if isinstance(batch, dict):
                batch = source.process_rollout({pid: b.to(source.device) for pid, b in batch.items()})
            else:
                batch = source.process_rollout(batch.to(source.device))
        num_epochs = settings.num_epochs
        per_epoch = self.minibatches_per_iteration() // num_epochs
        length = source.sequence_length()
        if isinstance(batch, dict):
            # Multi-agent: each policy's [M_p] transitions split into the same number of chunks,
            # so the number of optimizer steps per iteration is fixed whatever the agents did.
            data = {pid: b.reshape(-1) for pid, b in batch.items() if b.numel() > 0}
            sizes = {pid: math.ceil(b.batch_size[0] / per_epoch) for pid, b in data.items()}
            return IterationBatch(data, sizes, num_epochs, per_epoch, source.minibatch_generator)
        if length:
            data = to_sequences(batch, length)
            size = max(1, (settings.minibatch_size or length) // length)
        else:
            data = batch.reshape(-1)
            size = settings.minibatch_size or data.batch_size[0]
        return IterationBatch(data, size, num_epochs, per_epoch, source.minibatch_generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_OnPolicyDataset(self), batch_size=None, collate_fn=identity_collate)


class IterationBatch:
    """One iteration's post-processed experience and how to cut it into minibatches.

    ``data`` is a TensorDict with the learning rows on its first dimension (flat steps ``[B]``,
    or sequences ``[S, max_seq_len]`` for memory models), or ``{policy_id: TensorDict}`` for
    several policies. :meth:`minibatches` yields ``num_epochs x minibatches_per_epoch``
    minibatches of ``minibatch_size`` rows (per policy id when it is a dict): each pass draws
    one permutation per policy from ``generator``, and a minibatch is always full (the last
    one of a pass wraps around to the pass's first rows). Indexing ``data`` (``batch["key"]``)
    reads the unshuffled batch.
    """

    def __init__(
        self,
        data: TensorDict | dict[str, TensorDict],
        minibatch_size: int | dict[str, int],
        num_epochs: int,
        minibatches_per_epoch: int,
        generator: torch.Generator,
    ) -> None:
        self.data = data
        self.minibatch_size = minibatch_size
        self.num_epochs = int(num_epochs)
        self.minibatches_per_epoch = int(minibatches_per_epoch)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_epochs * self.minibatches_per_epoch

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def keys(self) -> Any:
        return self.data.keys()

    @property
    def is_multi_agent(self) -> bool:
        return isinstance(self.data, dict)

    def to(self, device: Any, non_blocking: bool = False) -> IterationBatch:
        """The same plan over data moved to ``device`` (Lightning's batch transfer calls this)."""
        if self.is_multi_agent:
            data: Any = {pid: b.to(device, non_blocking=non_blocking) for pid, b in self.data.items()}
        else:
            data = self.data.to(device, non_blocking=non_blocking)
        return IterationBatch(
            data, self.minibatch_size, self.num_epochs, self.minibatches_per_epoch, self.generator
        )

    def minibatches(self) -> Iterator[Any]:
        """The iteration's minibatches in training order (one indexing of ``data`` each)."""
        if self.is_multi_agent:
            for _ in range(self.num_epochs):
                plans = {pid: self._pass_indices(b, self.minibatch_size[pid]) for pid, b in self.data.items()}
                for i in range(self.minibatches_per_epoch):
                    yield {pid: take_rows(b, plans[pid][i]) for pid, b in self.data.items()}
            return
        for _ in range(self.num_epochs):
            indices = self._pass_indices(self.data, self.minibatch_size)
            for i in range(self.minibatches_per_epoch):
                yield take_rows(self.data, indices[i])

    def _pass_indices(self, data: TensorDict, size: int) -> torch.Tensor:
        """``[minibatches_per_epoch, size]`` row indices of one pass: a fresh permutation,
        wrapped around so that every minibatch is full."""
        rows = data.batch_size[0]
        order = torch.randperm(rows, generator=self.generator)
        count = self.minibatches_per_epoch * size
        if count != rows:
            order = order[torch.arange(count) % rows]
        return order.view(self.minibatches_per_epoch, size).to(data.device)


def take_rows(data: TensorDictBase, index: torch.Tensor) -> TensorDictBase:
    """``data[index]`` for a 1-D tensor of row indices, as one ``index_select`` per leaf.

    The same values as TensorDict's indexing, which handles every kind of index and costs about
    twice as much on a CartPole minibatch (~15 leaves): a sixth of a small network's update.
    Anything but a plain TensorDict of tensors takes TensorDict's own path.
    """
    if type(data) is not TensorDict or not data.batch_dims or any(n is not None for n in data.names):
        return data[index]
    items = {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            items[key] = torch.index_select(value, 0, index)
        elif isinstance(value, TensorDictBase):
            items[key] = take_rows(value, index)
        else:
            return data[index]
    return TensorDict(items, batch_size=(index.numel(), *data.batch_size[1:]), device=data.device)


class _OnPolicyDataset(IterableDataset):
    def __init__(self, datamodule: OnPolicyDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        if self.datamodule.yields_whole_iterations():
            return 1
        return self.datamodule.minibatches_per_iteration()

    def __iter__(self) -> Iterator[Any]:
        iteration = self.datamodule.iteration_batch()
        if self.datamodule.yields_whole_iterations():
            yield iteration
        else:
            yield from iteration.minibatches()


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
