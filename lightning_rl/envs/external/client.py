"""``ExternalEnvClient``: the Python side of the external-env protocol.

A simulator process connects with the shared token and then either asks the server for every
action (``inference="remote"``: one round trip per step, the server batches all clients into
one forward pass) or runs the policy itself (``inference="local"``: the server's ONNX or
TorchScript export, with the sampling noise drawn from this client's own seeded generator)
and uploads each finished episode with the log-probabilities the learner needs. The local model
is refreshed whenever an upload's reply shows that the learner's weights version moved.

Rewards given to :meth:`log_returns` travel with the next ``get_action``/``end_episode``
message, so a step costs one round trip.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lightning_rl.envs.external import protocol as proto
from lightning_rl.envs.external.config import TOKEN_ENV_VAR
from lightning_rl.envs.external.protocol import ServerError
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.optional import require
from lightning_rl.serialization import space_from_data

INFERENCE_MODES = ("remote", "local")
CLIENT_MAX_FRAME_BYTES = 512 * 1024 * 1024


@dataclass
class _LocalEpisode:
    training: bool
    explore: bool
    observations: list[Any] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    module_actions: list[Any] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    reward: float = 0.0  # since the last action


class ExternalEnvClient:
    """Connects one simulator to a lightning-rl policy server.

    Args:
        address: ``"host:port"`` or ``(host, port)`` of the server.
        token: the server's shared token (None: the ``LIGHTNING_RL_EXTERNAL_TOKEN`` environment variable).
        inference: ``"remote"`` (the server computes actions) or ``"local"`` (this process runs
            the exported policy and uploads finished episodes).
        model_format: ``"onnx"`` (run with onnxruntime) or ``"torchscript"`` (torch) for local inference.
        seed: seeds local inference's sampling noise.
        timeout_s: socket timeout per reply; it must exceed one learner update, during which
            the server holds action requests.
        connect_timeout_s: keep retrying the connection this long (the server may still be starting).
        encoding: ``"msgpack"`` (binary arrays) or ``"json"``.
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        token: str | None = None,
        *,
        inference: Literal["remote", "local"] = "remote",
        model_format: Literal["onnx", "torchscript"] = "onnx",
        seed: int | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 30.0,
        encoding: Literal["msgpack", "json"] = "msgpack",
    ) -> None:
        if inference not in INFERENCE_MODES:
            raise ConfigError(f"Unknown inference mode {inference!r}. Choices: {', '.join(INFERENCE_MODES)}.")
        if encoding not in ("msgpack", "json"):
            raise ConfigError(f"Unknown encoding {encoding!r}. Choices: msgpack, json.")
        if model_format not in ("onnx", "torchscript"):
            raise ConfigError(f"Unknown model format {model_format!r}. Choices: onnx, torchscript.")
        token = token if token is not None else os.environ.get(TOKEN_ENV_VAR)
        if not token:
            raise ConfigError(f"ExternalEnvClient needs the server's token (token=... or ${TOKEN_ENV_VAR}).")
        self.host, self.port = _parse_address(address)
        self.inference = inference
        self.model_format = model_format
        self.encoding = proto.MSGPACK if encoding == "msgpack" else proto.JSON
        self._binary = self.encoding == proto.MSGPACK
        self.rng = np.random.default_rng(seed)
        self.timeout_s = timeout_s
        self.sock = _connect(self.host, self.port, timeout_s, connect_timeout_s)
        self._reader = proto.FrameReader(CLIENT_MAX_FRAME_BYTES)
        self.welcome = self._request(
            {"type": proto.HELLO, "protocol_version": proto.PROTOCOL_VERSION, "token": token}
        )
        self.config = self._request({"type": proto.GET_CONFIG})
        self.observation_space: gym.Space = space_from_data(self.config["observation_space"])
        self.action_space: gym.Space = space_from_data(self.config["action_space"])
        self.weights_version: int = int(self.config["weights_version"])
        self._pending_rewards: dict[str, float] = {}
        self._local: dict[str, _LocalEpisode] = {}
        self._model: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.model_version = -2
        self.model_metadata: dict[str, Any] = {}
        self.num_model_refreshes = 0
        if inference == "local":
            self.refresh_model()

    # -- transport -------------------------------------------------------------------------------
    def _request(self, message: dict[str, Any], encoding: int | None = None) -> dict[str, Any]:
        if self.sock is None:
            raise ConnectionError("This ExternalEnvClient is closed.")
        self.sock.sendall(proto.encode_frame(message, self.encoding if encoding is None else encoding))
        reply = self._read()
        if reply["type"] == proto.ERROR:
            self.close()
            raise ServerError(str(reply.get("code")), str(reply.get("message")))
        return reply

    def _read(self) -> dict[str, Any]:
        while True:
            item = self._reader.next_message()
            if item is not None:
                return item[0]
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError(
                    f"The external env server {self.host}:{self.port} closed the connection."
                )
            self._reader.feed(data)

    def close(self) -> None:
        """Close the connection; the server drops this client's unfinished episodes."""
        sock, self.sock = getattr(self, "sock", None), None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> ExternalEnvClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- episodes ---------------------------------------------------------------------------------
    def start_episode(
        self, episode_id: str | None = None, *, training_enabled: bool = True, explore: bool = True
    ) -> str:
        """Start an episode; returns its id. ``training_enabled=False`` episodes are not learned from."""
        if self.inference == "local":
            episode_id = episode_id or uuid.uuid4().hex
            self._local[episode_id] = _LocalEpisode(training_enabled, explore)
            return episode_id
        message: dict[str, Any] = {
            "type": proto.START_EPISODE,
            "training_enabled": training_enabled,
            "explore": explore,
        }
        if episode_id is not None:
            message["episode_id"] = episode_id
        episode_id = self._request(message)["episode_id"]
        self._pending_rewards[episode_id] = 0.0
        return episode_id

    def get_action(self, episode_id: str, observation: Any) -> Any:
        """The action for ``observation`` (int for Discrete action spaces, else an array)."""
        if self.inference == "local":
            return self._local_action(self._local[episode_id], observation)
        reply = self._request(
            {
                "type": proto.GET_ACTION,
                "episode_id": episode_id,
                "observation": proto.encode_value(_as_numpy(observation), self._binary),
                "reward": self._pending_rewards.get(episode_id, 0.0),
            }
        )
        self._pending_rewards[episode_id] = 0.0
        self.weights_version = int(reply.get("weights_version", self.weights_version))
        action = reply["action"]
        return action if isinstance(self.action_space, spaces.Discrete) else np.asarray(action, np.float32)

    def log_returns(self, episode_id: str, reward: float) -> None:
        """Add ``reward`` to what the last action earned (sent with the next message)."""
        if self.inference == "local":
            self._local[episode_id].reward += float(reward)
        else:
            self._pending_rewards[episode_id] = self._pending_rewards.get(episode_id, 0.0) + float(reward)

    def end_episode(
        self, episode_id: str, observation: Any, *, terminated: bool = True, truncated: bool = False
    ) -> None:
        """Finish an episode with its final observation (bootstraps truncated ones)."""
        if self.inference == "local":
            self._end_local(episode_id, observation, terminated, truncated)
            return
        reply = self._request(
            {
                "type": proto.END_EPISODE,
                "episode_id": episode_id,
                "observation": proto.encode_value(_as_numpy(observation), self._binary),
                "reward": self._pending_rewards.pop(episode_id, 0.0),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
            }
        )
        self.weights_version = int(reply.get("weights_version", self.weights_version))

    def ping(self) -> int:
        """The server's current weights version."""
        self.weights_version = int(self._request({"type": proto.PING})["weights_version"])
        return self.weights_version

    # -- client-side inference ----------------------------------------------------------------------
    def refresh_model(self) -> None:
        """Fetch the server's current policy as ONNX/TorchScript and use it from now on."""
        reply = self._request({"type": proto.GET_MODEL, "format": self.model_format}, encoding=proto.MSGPACK)
        self.model_metadata = reply["metadata"]
        self._model = _load_model(self.model_format, bytes(reply["data"]), self.model_metadata)
        self.model_version = int(reply["weights_version"])
        self.num_model_refreshes += 1
        noise = self.model_metadata["noise"]
        self._noise_uniform = noise["distribution"] == "uniform"
        self._noise_width = int(noise["shape"][1])
        self._input_names = [entry["name"] for entry in self.model_metadata["inputs"]]
        self._input_dtypes = [np.dtype(entry["dtype"]) for entry in self.model_metadata["inputs"]]

    def _local_action(self, episode: _LocalEpisode, observation: Any) -> Any:
        if episode.actions:
            episode.rewards.append(episode.reward)
        episode.reward = 0.0
        observation = _as_numpy(observation)
        episode.observations.append(observation)
        if episode.explore:
            if self._noise_uniform:
                noise = self.rng.random((1, self._noise_width), dtype=np.float32)
                noise = np.clip(noise, 1e-7, 1 - 1e-7)
            else:
                noise = self.rng.standard_normal((1, self._noise_width), dtype=np.float32)
        else:  # a constant noise gives the greedy action
            noise = np.full((1, self._noise_width), 0.5 if self._noise_uniform else 0.0, np.float32)
        inputs = self._model_inputs(observation)
        action, module_action, log_prob = self._model(inputs, noise)
        episode.actions.append(action[0])
        episode.module_actions.append(module_action[0])
        episode.log_probs.append(float(log_prob[0]))
        if isinstance(self.action_space, spaces.Discrete):
            return int(action[0])
        return np.asarray(action[0])

    def _model_inputs(self, observation: Any) -> dict[str, np.ndarray]:
        if len(self._input_names) == 1 and not isinstance(observation, dict):
            return {self._input_names[0]: np.asarray(observation, self._input_dtypes[0])[None]}
        return {
            name: np.asarray(observation[name], dtype)[None]
            for name, dtype in zip(self._input_names, self._input_dtypes, strict=True)
        }

    def _end_local(self, episode_id: str, observation: Any, terminated: bool, truncated: bool) -> None:
        episode = self._local.pop(episode_id)
        if not episode.actions:
            return
        episode.rewards.append(episode.reward)
        episode.observations.append(_as_numpy(observation))
        if not episode.training:
            return
        binary = self._binary
        data = {
            "observations": proto.encode_value(_stack(episode.observations), binary),
            "actions": proto.encode_value(np.stack(episode.actions), binary),
            "module_actions": proto.encode_value(np.stack(episode.module_actions), binary),
            "action_log_probs": episode.log_probs,
            "rewards": episode.rewards,
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        }
        reply = self._request({"type": proto.UPLOAD_EPISODES, "episodes": [data]})
        self.weights_version = int(reply["weights_version"])
        if self.weights_version != self.model_version:
            self.refresh_model()

    # -- driving a gymnasium env ---------------------------------------------------------------------
    def check_env(self, env: gym.Env) -> None:
        """One clear error if ``env``'s spaces differ from the server's."""
        for name, mine, theirs in (
            ("observation", env.observation_space, self.observation_space),
            ("action", env.action_space, self.action_space),
        ):
            if (
                type(mine) is not type(theirs)
                or mine.shape != theirs.shape
                or (isinstance(mine, spaces.Discrete) and (mine.n, mine.start) != (theirs.n, theirs.start))
            ):
                raise SpaceError(f"The env's {name} space {mine} does not match the server's {theirs}.")

    def run(
        self,
        env: gym.Env,
        *,
        num_episodes: int | None = None,
        seconds: float | None = None,
        seed: int | None = None,
        training_enabled: bool = True,
        explore: bool = True,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[float]:
        """Play episodes of ``env`` through the server until a limit is hit; returns their returns.

        A server that shuts down or goes away ends the run quietly (the returns of the finished
        episodes are returned); an error frame for anything else is raised.
        """
        self._returns: list[float] = []
        try:
            return self._run(env, num_episodes, seconds, seed, training_enabled, explore, should_stop)
        except ServerError as exc:
            if exc.code != proto.SERVER_CLOSING:
                raise
        except TimeoutError:
            raise
        except (ConnectionError, OSError):
            if self.sock is None:  # closed by this process (another thread called close())
                return self._returns
            self.close()
        return self._returns

    def _run(
        self,
        env: gym.Env,
        num_episodes: int | None,
        seconds: float | None,
        seed: int | None,
        training_enabled: bool,
        explore: bool,
        should_stop: Callable[[], bool] | None,
    ) -> list[float]:
        self.check_env(env)
        deadline = None if seconds is None else time.monotonic() + seconds
        returns: list[float] = []
        self._returns = returns
        observation, _ = env.reset(seed=seed)
        while num_episodes is None or len(returns) < num_episodes:
            if (deadline is not None and time.monotonic() >= deadline) or (should_stop and should_stop()):
                break
            episode_id = self.start_episode(training_enabled=training_enabled, explore=explore)
            total, done = 0.0, False
            while not done:
                action = self.get_action(episode_id, observation)
                observation, reward, terminated, truncated, _ = env.step(action)
                self.log_returns(episode_id, float(reward))
                total += float(reward)
                done = bool(terminated or truncated)
            self.end_episode(episode_id, observation, terminated=bool(terminated), truncated=bool(truncated))
            returns.append(total)
            observation, _ = env.reset()
        return returns


def _parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, tuple | list) and len(address) == 2:
        return str(address[0]), int(address[1])
    if isinstance(address, str) and ":" in address:
        host, _, port = address.rpartition(":")
        if port.isdigit():
            return host.strip("[]"), int(port)
    raise ConfigError(f"A server address is 'host:port' or (host, port), got {address!r}.")


def _connect(host: str, port: int, timeout_s: float, connect_timeout_s: float) -> socket.socket:
    deadline = time.monotonic() + connect_timeout_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=min(timeout_s, 10.0))
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"Cannot reach the external env server at {host}:{port} within "
                    f"{connect_timeout_s:g} s: {exc}"
                ) from exc
            time.sleep(0.1)
    sock.settimeout(timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _as_numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_numpy(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_as_numpy(v) for v in value)
    return np.asarray(value)


def _stack(items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, dict):
        return {k: _stack([item[k] for item in items]) for k in first}
    if isinstance(first, tuple):
        return [_stack([item[i] for item in items]) for i in range(len(first))]
    return np.stack(items)


def _load_model(fmt: str, data: bytes, metadata: dict[str, Any]) -> Callable[..., Any]:
    names = [entry["name"] for entry in metadata["inputs"]]
    if fmt == "onnx":
        ort = require("onnxruntime", purpose="Local inference on an ONNX model")

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

        def run_onnx(inputs: dict[str, np.ndarray], noise: np.ndarray) -> Any:
            return session.run(None, {**inputs, "noise": noise})

        return run_onnx
    if fmt == "torchscript":
        import torch

        module = torch.jit.load(io.BytesIO(data))

        def run_torchscript(inputs: dict[str, np.ndarray], noise: np.ndarray) -> Any:
            with torch.no_grad():
                tensors = [torch.from_numpy(inputs[name]) for name in names]
                outputs = module(*tensors, torch.from_numpy(noise))
            return [o.numpy() for o in outputs]

        return run_torchscript
    raise ConfigError(f"Unknown model format {fmt!r}. Choices: onnx, torchscript.")
