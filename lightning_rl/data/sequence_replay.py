"""Sequence replay (DreamerV3): one stream of steps per env copy, replayed as ``[B, T]`` windows.

Model-based agents learn from consecutive steps, so this replay keeps each env copy's
experience in order, as one stream per copy (identified by its runner's worker index and the
copy's index in that runner, so a failed runner's missing rows never shift another copy's
data), and replays ``batch_size_B`` windows of ``batch_length_T`` consecutive steps. A window
may start in the middle of an episode and may run over an episode's end into the next one of
the same copy; ``is_first`` marks the real episode starts, and no window ever mixes two copies.

Steps are stored the way the world model reads them (:func:`to_sequence_steps`): each step is
an observation with the action that led to it (``prev_action``), the reward received on
arriving (``reward``), ``is_first`` and ``is_terminated``. A runner's ``[N, T]`` transitions
map onto that exactly: every transition becomes the step of its next observation (the true
final observation where an episode ended), and every episode start adds the step of its first
observation. Conversion, storage and window sampling are batched tensor operations: no Python
loop over steps or windows.

One ``iter()`` of the training DataLoader is one training iteration: sample
``rollout_fragment_length`` steps per env copy (the first iteration samples until
``num_steps_sampled_before_learning_starts`` and at least one window per copy are stored), then
replay a number of ``[B, T]`` windows fixed by the config: ``training_ratio`` replayed steps per
env step, i.e. ``training_ratio x steps_per_iteration / (B x T)`` updates, fractions carried
over exactly between iterations. The count depends only on the config and the iteration number,
so every DDP rank makes the same number of updates.

``checkpoint_replay_buffer=True`` saves every stream (its steps, oldest first, as plain tensors)
in the DataModule's state, so checkpoints stay loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import torch
from tensordict import TensorDict

from lightning_rl.data.replay_schedule import ReplayingDataModule, updates_per_iteration
from lightning_rl.errors import CheckpointError, ConfigError

STEP_FIELDS = ("observation", "prev_action", "reward", "is_first", "is_terminated")
# Storage grows by doubling up to the capacity: 1M image steps are not allocated up front.
INITIAL_ALLOCATION = 1024


def to_sequence_steps(batch: TensorDict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A runner's ``[N, T]`` transitions -> per-copy steps ``[N, L]`` (zero-padded) and lengths ``[N]``.

    Transition ``t`` of copy ``n`` becomes the step of its next observation (with the action
    taken, the reward earned and ``terminated``); where ``is_init`` marks an episode start, the
    step of the episode's first observation (``is_first``, zero action and reward) comes first.
    """
    is_init = batch["is_init"].reshape(batch.batch_size)
    n, t = batch.batch_size
    starts_so_far = is_init.long().cumsum(1)
    position = torch.arange(t).unsqueeze(0) + starts_so_far  # where each transition's step goes
    lengths = t + starts_so_far[:, -1]
    size = int(lengths.max())
    rows = torch.arange(n).unsqueeze(1).expand(n, t)
    observation = batch["observation"]
    action = batch["action"]
    steps = {
        "observation": observation.new_zeros((n, size, *observation.shape[2:])),
        "prev_action": action.new_zeros((n, size, *action.shape[2:])),
        "reward": torch.zeros(n, size),
        "is_first": torch.zeros(n, size, dtype=torch.bool),
        "is_terminated": torch.zeros(n, size, dtype=torch.bool),
    }
    steps["observation"][rows, position] = batch["next", "observation"]
    steps["prev_action"][rows, position] = action
    steps["reward"][rows, position] = batch["next", "reward"].reshape(n, t).float()
    steps["is_terminated"][rows, position] = batch["next", "terminated"].reshape(n, t)
    start_rows, start_times = is_init.nonzero(as_tuple=True)
    start_position = position[start_rows, start_times] - 1
    steps["observation"][start_rows, start_position] = observation[start_rows, start_times]
    steps["is_first"][start_rows, start_position] = True
    return steps, lengths


class SequenceReplayBuffer:
    """Ring storage of steps, one stream per env copy, and uniform ``[B, T]`` window sampling.

    All streams live in one tensor per field, ``[streams, allocated, ...]``, so a batch of
    windows is one gather. Each stream keeps at most ``capacity_per_stream`` steps (its
    oldest are overwritten first).
    """

    def __init__(self, capacity_per_stream: int, generator: torch.Generator | None = None) -> None:
        if capacity_per_stream <= 0:
            raise ConfigError(f"capacity_per_stream must be positive, got {capacity_per_stream!r}.")
        self.capacity = int(capacity_per_stream)
        self.generator = generator
        self.data: dict[str, torch.Tensor] = {}
        self.keys: dict[tuple[int, int], int] = {}
        self.start = torch.zeros(0, dtype=torch.long)  # physical index of each stream's oldest step
        self.count = torch.zeros(0, dtype=torch.long)  # steps stored per stream

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def num_streams(self) -> int:
        return len(self.keys)

    @property
    def allocated(self) -> int:
        return next(iter(self.data.values())).shape[1] if self.data else 0

    def __len__(self) -> int:
        return int(self.count.sum())

    def stream(self, key: tuple[int, int]) -> int:
        """The stream of env copy ``key`` (``(worker_index, env_index)``), created on first use."""
        key = (int(key[0]), int(key[1]))
        if key not in self.keys:
            self.keys[key] = len(self.keys)
            self.start = torch.cat([self.start, torch.zeros(1, dtype=torch.long)])
            self.count = torch.cat([self.count, torch.zeros(1, dtype=torch.long)])
        return self.keys[key]

    def _reallocate(self, template: dict[str, torch.Tensor], allocated: int) -> None:
        """Storage for every stream with ``allocated`` slots, each stream's steps moved to the front."""
        streams = self.num_streams
        new = {
            name: value.new_zeros((streams, allocated, *value.shape[1:])) for name, value in template.items()
        }
        if self.data:
            old_allocated = self.allocated
            longest = int(self.count.max()) if streams else 0
            offsets = torch.arange(longest)
            for name, old in self.data.items():
                rows = old.shape[0]
                index = (self.start[:rows, None] + offsets) % old_allocated
                moved = old[torch.arange(rows)[:, None], index]
                keep = offsets < self.count[:rows, None]
                new[name][:rows, :longest][keep] = moved[keep]
        self.data = new
        self.start = torch.zeros(streams, dtype=torch.long)

    def extend(self, stream: int, steps: dict[str, torch.Tensor]) -> None:
        """Append ``k`` consecutive steps (``{field: [k, ...]}``) to one stream."""
        k = int(next(iter(steps.values())).shape[0])
        if k == 0:
            return
        if k > self.capacity:
            steps = {name: value[-self.capacity :] for name, value in steps.items()}
            k = self.capacity
        count = int(self.count[stream])
        allocated = self.allocated
        more_slots = count + k > allocated and allocated < self.capacity
        if more_slots or not self.data or self.data["reward"].shape[0] < self.num_streams:
            if more_slots:
                allocated = min(self.capacity, max(INITIAL_ALLOCATION, count + k, 2 * allocated))
            self._reallocate(steps, allocated)
        start = int(self.start[stream])
        position = (start + count + torch.arange(k)) % allocated
        for name, value in steps.items():
            self.data[name][stream, position] = value
        overflow = count + k - allocated
        if overflow > 0:
            self.start[stream] = (start + overflow) % allocated
        self.count[stream] = min(count + k, allocated)

    # -- sampling ----------------------------------------------------------------------------
    def num_windows(self, length: int) -> torch.Tensor:
        """Windows of ``length`` consecutive steps each stream can serve."""
        return (self.count - length + 1).clamp_min(0)

    def sample(self, batch_size: int, length: int) -> dict[str, torch.Tensor]:
        """``batch_size`` windows of ``length`` steps, uniform over all windows of all streams."""
        windows = self.num_windows(length)
        total = int(windows.sum())
        if total == 0:
            raise ConfigError(
                f"The sequence replay holds no window of batch_length_T={length} steps yet (longest stream: "
                f"{int(self.count.max()) if self.num_streams else 0} steps)."
            )
        choice = torch.randint(total, (batch_size,), generator=self.generator)
        ends = windows.cumsum(0)
        stream = torch.searchsorted(ends, choice, right=True)
        offset = choice - (ends[stream] - windows[stream])
        index = (self.start[stream] + offset).unsqueeze(1) + torch.arange(length)
        index = index % self.allocated
        rows = stream.unsqueeze(1)
        return {name: value[rows, index] for name, value in self.data.items()}

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every stream's steps, oldest first, as plain tensors."""
        streams = []
        for key, stream in self.keys.items():
            count = int(self.count[stream])
            index = (self.start[stream] + torch.arange(count)) % max(1, self.allocated)
            streams.append(
                {
                    "key": list(key),
                    "steps": {name: value[stream, index].clone() for name, value in self.data.items()},
                }
            )
        return {"capacity_per_stream": self.capacity, "streams": streams}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data, self.keys = {}, {}
        self.start = torch.zeros(0, dtype=torch.long)
        self.count = torch.zeros(0, dtype=torch.long)
        for entry in state.get("streams", []):
            steps = entry["steps"]
            size = int(next(iter(steps.values())).shape[0]) if steps else 0
            if size > self.capacity:
                raise CheckpointError(
                    f"The checkpoint's sequence replay holds {size} steps of env copy {tuple(entry['key'])}, "
                    f"more than the {self.capacity} steps per copy this configuration keeps "
                    "(replay_buffer_config capacity / env copies); restore with a larger capacity."
                )
            stream = self.stream(tuple(entry["key"]))
            if size:
                self.extend(stream, steps)


class SequenceReplayDataModule(ReplayingDataModule):
    """Samples into per-env-copy streams and replays ``[B, T]`` windows; see the module docstring.

    Settings (:class:`~lightning_rl.data.source.SamplingSettings`): ``batch_size_B``, ``batch_length_T``,
    ``training_ratio``,
    ``replay_buffer_config["capacity"]`` (steps over all env copies of this rank),
    ``num_steps_sampled_before_learning_starts``, ``checkpoint_replay_buffer``.
    """

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.buffer: SequenceReplayBuffer | None = None
        self._pending_buffer: dict[str, Any] | None = None

    # -- configuration ----------------------------------------------------------------------
    def steps_per_update(self) -> int:
        return int(self.settings.batch_size_B) * int(self.settings.batch_length_T)

    def rollout_fragment_length(self) -> int:
        """``"auto"``: the fewest steps per env copy that make at least one update per iteration."""
        settings = self.settings
        if settings.rollout_fragment_length != "auto":
            return int(settings.rollout_fragment_length)
        per_iteration = self.steps_per_update() / float(settings.training_ratio)
        return max(1, math.ceil(per_iteration / self.sampling_width()))

    def updates_per_iteration(self) -> Fraction:
        return updates_per_iteration(
            self.settings.training_ratio, self.steps_per_iteration(), self.steps_per_update()
        )

    def capacity_per_stream(self) -> int:
        settings = self.settings
        capacity = int((settings.replay_buffer_config or {}).get("capacity", 1_000_000))
        return max(int(settings.batch_length_T), capacity // self.sampling_width())

    # -- lifecycle --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        if self.buffer is None:
            self.buffer = SequenceReplayBuffer(self.capacity_per_stream(), self.draw_generator)
        if self._pending_buffer is not None:
            self.buffer.load_state_dict(self._pending_buffer)
            self._pending_buffer = None

    # -- experience -------------------------------------------------------------------------
    def collect(self) -> None:
        """Sample one iteration's steps (more in the first, to reach the learning start) and store them."""
        fragment = self.rollout_fragment_length()
        length = int(self.settings.batch_length_T)
        shortest = int(self.buffer.count.min()) if self.buffer.num_streams else 0
        missing = (
            int(self.settings.num_steps_sampled_before_learning_starts) - self.num_env_steps_sampled_lifetime
        )
        if missing > 0 or shortest < length:
            # The step counter is global (all DDP ranks); each rank samples its share. Every copy
            # also needs one window's worth of steps before anything can be replayed.
            ranks = self.trainer.world_size if self.trainer is not None else 1
            fragment = max(fragment, math.ceil(missing / (self.sampling_width() * ranks)), length - shortest)
        batch = self.sample(fragment)
        with torch.no_grad():
            batch = self.source.process_rollout(batch)
        self.add(batch, self.last_sample_worker_indices)

    def add(self, batch: TensorDict, worker_indices: list[int] | None = None) -> None:
        """Store a runner batch ``[N, T]`` (rows: ``num_envs_per_env_runner`` per worker, in order)."""
        steps, lengths = to_sequence_steps(batch.to("cpu"))
        per_worker = int(self.settings.num_envs_per_env_runner)
        workers = worker_indices or [0] * max(1, batch.batch_size[0] // per_worker)
        for row in range(batch.batch_size[0]):
            key = (workers[min(row // per_worker, len(workers) - 1)], row % per_worker)
            size = int(lengths[row])
            self.buffer.extend(
                self.buffer.stream(key), {name: value[row, :size] for name, value in steps.items()}
            )
        self.last_metrics["replay_buffer/num_entries"] = float(len(self.buffer))

    def replay(self, count: int) -> Iterator[TensorDict]:
        """``count`` replayed ``[B, T]`` windows on the source's device."""
        size, length = int(self.settings.batch_size_B), int(self.settings.batch_length_T)
        device = self.source.device
        for _ in range(count):
            window = self.buffer.sample(size, length)
            yield TensorDict(window, batch_size=[size, length]).to(device)

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.settings.checkpoint_replay_buffer and self.buffer is not None:
            state["sequence_replay"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        saved = state_dict.get("sequence_replay")
        if saved is None:
            return
        if self.buffer is not None:
            self.buffer.load_state_dict(saved)
        else:
            self._pending_buffer = saved
