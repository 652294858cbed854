"""Memory cores (LSTM, GRU, GTrXL attention) and the recurrent actor-critic built on them.

Every core keeps its state as ONE flat tensor per env copy (``[B, state_size]``), so runners
store it with the rollout like any other policy output, and offers two views of the same
computation:

* ``step(x [B, F], state) -> (y [B, H], new_state)`` — one env step, in the EnvRunner;
* ``sequence(x [B, L, F], is_init [B, L], state0) -> y [B, L, H]`` — a stored sequence replayed
  on the learner from the state stored at its first step, resetting where a new episode starts.

``tests/test_recurrent.py`` checks that replaying a rollout with ``sequence`` reproduces the
runner's step-by-step outputs exactly, episode resets inside the sequence included.
"""

from __future__ import annotations

import abc
import math

import gymnasium as gym
import torch
from torch import nn

from lightning_rl.modules.distributions import DiagGaussianDistribution, distribution_for
from lightning_rl.modules.encoders import build_encoder, init_linear
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.policy_networks import (
    PolicySpec,
    apply_action_mask,
    observation_key,
    split_action_mask,
)


class RecurrentCore(nn.Module, abc.ABC):
    """Interface of the memory cores; see the module docstring."""

    out_dim: int
    state_size: int

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.state_size)

    @abc.abstractmethod
    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sequence(self, x: torch.Tensor, is_init: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Replay step by step, zeroing the state wherever an episode starts (exactly as the
        runner did). A loop over ``L`` steps of one small matmul each is the cheapest exact
        replay on CPU for the short sequences RL uses (``max_seq_len`` ~ 20-64)."""
        outputs = []
        for t in range(x.shape[1]):
            state = state * (~is_init[:, t]).unsqueeze(-1).to(state.dtype)
            y, state = self.step(x[:, t], state)
            outputs.append(y)
        return torch.stack(outputs, dim=1)


class LSTMCore(RecurrentCore):
    """``nn.LSTM`` (one layer); the state is ``[h, c]`` concatenated."""

    def __init__(self, in_dim: int, cell_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, cell_size, batch_first=True)
        self.cell_size = cell_size
        self.out_dim = cell_size
        self.state_size = 2 * cell_size

    def step(self, x, state):
        h, c = state.split(self.cell_size, dim=-1)
        out, (h, c) = self.lstm(x.unsqueeze(1), (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        return out[:, 0], torch.cat([h[0], c[0]], dim=-1)


class GRUCore(RecurrentCore):
    """``nn.GRU`` (one layer); the state is ``h``."""

    def __init__(self, in_dim: int, cell_size: int) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, cell_size, batch_first=True)
        self.out_dim = cell_size
        self.state_size = cell_size

    def step(self, x, state):
        out, h = self.gru(x.unsqueeze(1), state.unsqueeze(0).contiguous())
        return out[:, 0], h[0]


class GRUGate(nn.Module):
    """GTrXL's gating layer in place of a residual connection (Parisotto et al., 2019)."""

    def __init__(self, dim: int, bias: float = 2.0) -> None:
        super().__init__()
        self.w = nn.Linear(dim, 3 * dim, bias=False)
        self.u = nn.Linear(dim, 2 * dim, bias=False)
        self.u_h = nn.Linear(dim, dim, bias=False)
        self.bias = bias  # > 0 starts the gate near identity, which stabilises early training

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        wr, wz, wh = self.w(y).chunk(3, dim=-1)
        ur, uz = self.u(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.bias)
        h = torch.tanh(wh + self.u_h(r * x))
        return (1 - z) * x + z * h


class GTrXLUnit(nn.Module):
    """One gated transformer-XL layer: attention over its memory window, then an MLP."""

    def __init__(self, dim: int, heads: int, memory: int) -> None:
        super().__init__()
        self.heads, self.memory = heads, memory
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # A learned bias per head and per key age (0 = the current step ... memory).
        self.age_bias = nn.Parameter(torch.zeros(heads, memory + 1))
        self.gate_attention = GRUGate(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.gate_mlp = GRUGate(dim)

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor, age: torch.Tensor
    ) -> torch.Tensor:
        """x ``[B, Lq, D]`` attends to keys ``[B, Lk, D]`` where ``allowed`` ``[B, Lq, Lk]``."""
        b, lq, d = x.shape
        h, hd = self.heads, d // self.heads
        q = self.qkv(self.norm_q(x))[..., :d]
        kv = self.qkv(self.norm_kv(keys))[..., d:]
        k, v = kv.chunk(2, dim=-1)
        q = q.view(b, lq, h, hd).transpose(1, 2)
        k = k.view(b, -1, h, hd).transpose(1, 2)
        v = v.view(b, -1, h, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + self.age_bias[:, age.clamp(0, self.memory)]
        scores = scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))
        attention = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        out = (attention @ v).transpose(1, 2).reshape(b, lq, d)
        x = self.gate_attention(x, torch.relu(self.proj(out)))
        return self.gate_mlp(x, torch.relu(self.mlp(self.norm_mlp(x))))


class GTrXLCore(RecurrentCore):
    """Gated transformer-XL memory (``use_attention``): each layer attends to the last
    ``memory`` inputs it saw in the episode, plus the current one.

    State per env copy: for each layer its memory of past inputs ``[memory, dim]``, plus one
    validity flag per slot; a new episode clears the flags, so no step ever attends across an
    episode start.
    """

    def __init__(self, in_dim: int, dim: int, heads: int, num_units: int, memory: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention_dim ({dim}) must be divisible by attention_num_heads ({heads})")
        self.input = nn.Linear(in_dim, dim)
        self.units = nn.ModuleList([GTrXLUnit(dim, heads, memory) for _ in range(num_units)])
        self.dim, self.memory, self.num_units = dim, memory, num_units
        self.out_dim = dim
        self.state_size = num_units * memory * dim + memory

    def _unpack(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = state.shape[0]
        memories = state[:, : -self.memory].view(b, self.num_units, self.memory, self.dim)
        return memories, state[:, -self.memory :] > 0.5

    def _pack(self, memories: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.cat([memories.flatten(1), valid.to(memories.dtype)], dim=-1)

    def step(self, x, state):
        return self._run(self.input(x).unsqueeze(1), torch.zeros(x.shape[0], 1, dtype=torch.bool), state)

    def sequence(self, x, is_init, state):
        embedded = self.input(x)
        out, _ = self._run_sequence(embedded, is_init, state)
        return out

    def _run(self, e, is_init, state):
        out, new_state = self._run_sequence(e, is_init, state)
        return out[:, 0], new_state

    def _run_sequence(self, e: torch.Tensor, is_init: torch.Tensor, state: torch.Tensor):
        length = e.shape[1]
        m = self.memory
        memories, valid = self._unpack(state)
        # Which episode (counted within this sequence) each step belongs to; 0 = the one in memory.
        episode = torch.cumsum(is_init.long(), dim=1)  # [B, L]
        steps = torch.arange(length)
        # Keys: m memory slots (oldest first, slot j is m - j steps before the sequence) then
        # the sequence itself. Ages relative to each query step t.
        key_time = torch.cat([torch.arange(-m, 0), steps])  # [m + L]
        age = steps[:, None] - key_time[None, :]  # [L, m + L]
        in_window = (age >= 0) & (age <= m)
        memory_ok = (episode == 0)[:, :, None] & valid[:, None, :]  # [B, L, m]
        seq_same_episode = episode[:, :, None] == episode[:, None, :]  # [B, L, L]
        allowed = torch.cat([memory_ok, seq_same_episode], dim=-1) & in_window[None]
        x = e
        new_memories = []
        for u, unit in enumerate(self.units):
            keys = torch.cat([memories[:, u], x], dim=1)
            new_memories.append(keys[:, -m:])
            x = unit(x, keys, allowed, age)
        # The new memory: the last m inputs of each layer, valid if in the last episode.
        last_episode = episode[:, -1:]
        seq_valid = episode == last_episode  # [B, L]
        all_valid = torch.cat([valid & (last_episode == 0), seq_valid], dim=1)[:, -m:]
        return x, self._pack(torch.stack(new_memories, dim=1), all_valid)


MEMORY_SWITCHES = ("use_lstm", "use_gru", "use_attention")


def memory_switches(config: DefaultModelConfig) -> list[str]:
    """The memory-model switches set in ``config`` (for error messages naming them)."""
    return [name for name in MEMORY_SWITCHES if getattr(config, name)]


def is_recurrent(config: DefaultModelConfig) -> bool:
    return bool(memory_switches(config))


def build_core(in_dim: int, config: DefaultModelConfig) -> RecurrentCore:
    chosen = memory_switches(config)
    if len(chosen) > 1:
        raise ValueError(f"Choose one memory core, got {chosen}")
    if config.use_attention:
        return GTrXLCore(
            in_dim,
            config.attention_dim,
            config.attention_num_heads,
            config.attention_num_transformer_units,
            config.attention_memory_inference,
        )
    if config.use_gru:
        return GRUCore(in_dim, config.lstm_cell_size)
    return LSTMCore(in_dim, config.lstm_cell_size)


class RecurrentActorCritic(nn.Module):
    """encoder -> memory core -> policy head and value head (one shared trunk, as RLlib's
    recurrent default models: the runner only runs the policy, so a separate value core would
    have no stored state to replay from)."""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: DefaultModelConfig
    ) -> None:
        super().__init__()
        self.obs_key = observation_key(observation_space)
        observation_space, self.masked = split_action_mask(observation_space)
        self.distribution = distribution_for(action_space)
        self.encoder = build_encoder(observation_space, config)
        self.core = build_core(self.encoder.out_dim, config)
        width = self.core.out_dim
        self.continuous = isinstance(self.distribution, DiagGaussianDistribution)
        if self.continuous:
            self.pi_head = init_linear(nn.Linear(width, self.distribution.dim), 0.01, config.orthogonal_init)
            self.log_std = nn.Parameter(torch.full((self.distribution.dim,), float(config.log_std_init)))
        else:
            self.pi_head = init_linear(nn.Linear(width, self.distribution.n), 0.01, config.orthogonal_init)
        self.vf_head = init_linear(nn.Linear(width, 1), 1.0, config.orthogonal_init)

    @property
    def state_size(self) -> int:
        return self.core.state_size

    def _encode(self, obs):
        return self.encoder(obs[self.obs_key] if self.masked else obs)

    def step(self, obs, state):
        """One env step: (features ``[B, H]``, new state)."""
        return self.core.step(self._encode(obs), state)

    def sequence(self, obs, is_init, state):
        """Replay ``[B, L]`` sequences from their first step's state: features ``[B, L, H]``."""
        lead = is_init.shape[:2]
        encoded = self._encode(_flatten_time(obs)).reshape(*lead, -1)
        return self.core.sequence(encoded, is_init, state)

    def replay(self, obs, is_init: torch.Tensor, states: torch.Tensor, max_seq_len: int) -> torch.Tensor:
        """Features ``[B, T, H]`` of whole ``[B, T]`` rollout rows (IMPALA's fragments), replayed in
        ``max_seq_len`` chunks, each from its first step's stored state (backpropagation through
        time is truncated at chunk starts, as RLlib's ``max_seq_len``).

        The chunks are folded into the batch, so the sequential loop is ``max_seq_len`` steps
        long whatever ``T``; a short last chunk is padded by repeating the row's final step, and
        since padding only ever follows real steps it cannot change them and is cut off.
        """
        rows, length = is_init.shape[:2]
        chunk = max(1, min(int(max_seq_len), length))
        chunks = math.ceil(length / chunk)
        index = torch.arange(chunks * chunk, device=is_init.device).clamp_max(length - 1)

        def fold(x):
            if isinstance(x, dict):
                return {k: fold(v) for k, v in x.items()}
            x = x[:, index]
            if isinstance(x, torch.Tensor):
                return x.reshape(rows * chunks, chunk, *x.shape[2:])
            return x.reshape(rows * chunks, chunk)  # a TensorDict: reshape its batch dims

        first_states = states[:, ::chunk].reshape(rows * chunks, states.shape[-1])
        features = self.sequence(fold(obs), fold(is_init), first_states)
        return features.reshape(rows, chunks * chunk, -1)[:, :length]

    def values_from_states(self, obs, states: torch.Tensor) -> torch.Tensor:
        """``V`` ``[*lead, 1]`` of observations ``[*lead, ...]`` each seen from its own stored state
        ``[*lead, S]``: one batched step, no sequential pass (bootstrap values, and PPO's GAE
        values, which are exact when the runner acted with the learner's weights)."""
        lead = states.shape[:-1]
        features, _ = self.step(_flatten_leading(obs, len(lead)), states.reshape(-1, states.shape[-1]))
        return self.value(features).reshape(*lead, 1)

    def policy_params(self, features: torch.Tensor, obs=None) -> tuple[torch.Tensor, ...]:
        out = self.pi_head(features)
        if self.masked:
            return (apply_action_mask(out, obs),)
        if self.continuous:
            return out, self.log_std.clamp(-20.0, 2.0).exp().expand_as(out)
        return (out,)

    def value(self, features: torch.Tensor) -> torch.Tensor:
        return self.vf_head(features)


def _flatten_leading(obs, dims: int):
    if isinstance(obs, dict) or hasattr(obs, "keys"):  # dicts and TensorDicts of observations
        return {k: _flatten_leading(obs[k], dims) for k in obs.keys()}  # noqa: SIM118
    return obs.flatten(0, dims - 1)


def _flatten_time(obs):
    if isinstance(obs, dict):
        return {k: _flatten_time(v) for k, v in obs.items()}
    return obs.flatten(0, 1)


class RecurrentStochasticPolicy(nn.Module):
    """The runner-side policy of a :class:`RecurrentActorCritic`: keeps one state per env copy.

    Its outputs include ``recurrent_state`` (the state it acted from) and
    ``next_recurrent_state`` (the state after the step), which the runner stores with the
    rollout: the learner replays sequences from them and bootstraps values with them.
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, model_config: dict | None = None
    ):
        super().__init__()
        self.net = RecurrentActorCritic(observation_space, action_space, resolve_model_config(model_config))
        self.state = torch.zeros(0, self.net.state_size)

    @classmethod
    def spec(
        cls, observation_space: gym.Space, action_space: gym.Space, model_config: DefaultModelConfig
    ) -> PolicySpec:
        """The runner recipe of every algorithm with memory models (PPO, IMPALA, APPO): the
        learner replays exactly what this policy computed step by step."""
        return PolicySpec(
            cls,
            {
                "observation_space": observation_space,
                "action_space": action_space,
                "model_config": model_config.to_dict(),
            },
        )

    keeps_episode_state = True

    @property
    def export_state_size(self) -> int:
        return int(self.net.state_size)

    def export_step(self, obs, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, state_out = self.net.step(obs, state)
        return self.net.distribution.mode(self.net.policy_params(features, obs)), state_out

    def reset(self, num_envs: int) -> None:
        self.state = self.net.core.initial_state(num_envs)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        self.state[env_ids] = 0.0

    def forward(self, obs, explore: bool = True, generator: torch.Generator | None = None) -> dict:
        state_in = self.state
        if state_in.shape[0] != _batch_size(obs):
            state_in = self.state = self.net.core.initial_state(_batch_size(obs))
        features, state_out = self.net.step(obs, state_in)
        params = self.net.policy_params(features, obs)
        distribution = self.net.distribution
        if explore:
            action, log_prob = distribution.sample(params, generator)
        else:
            action = distribution.mode(params)
            log_prob = distribution.log_prob(params, action)
        self.state = state_out
        return {
            "action": action,
            "action_log_prob": log_prob,
            "recurrent_state": state_in,
            "next_recurrent_state": state_out,
        }

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)

    def set_extra(self, extra: dict) -> None:
        """No non-weight state."""


def _batch_size(obs) -> int:
    if isinstance(obs, dict):
        return _batch_size(next(iter(obs.values())))
    return obs.shape[0]
