"""Shared pieces of the external-env tests: an exact test env, a server harness, raw sockets."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.envs.external import ExternalEnvClient
from lightning_rl.envs.external import protocol as proto
from lightning_rl.errors import EnvError

TOKEN = "test-token-0123456789"


class StepCountEnv(gym.Env):
    """obs = [client id, episode number, step]; reward = 1 + action; ``length`` steps per episode.

    Every transition is known from its observation alone, so a test can rebuild each episode
    from the learner's batch and check that segments are whole and correctly flagged.
    """

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        self.client_id = float(config.get("client_id", 0))
        self.length = int(config.get("length", 5))
        self.terminate = bool(config.get("terminate", True))
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.episode = -1
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.client_id, self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return self._obs(), 1.0 + float(action), done and self.terminate, done and not self.terminate, {}


def make_algo(batch_mode: str = "truncate_episodes", **kwargs: Any) -> PPO:
    external = {"token": TOKEN, "batch_mode": batch_mode, **kwargs.pop("external", {})}
    settings = dict(train_batch_size=64, minibatch_size=32, num_epochs=1, num_envs_per_env_runner=1)
    settings.update(kwargs)
    return PPO(StepCountEnv, external=external, **settings)


def make_runner(algo: PPO) -> Any:
    spec = algo.env_runner_spec(num_envs=algo.hparams.num_envs_per_env_runner)
    return spec.runner_class()(spec)


class ClientThread(threading.Thread):
    """A well-behaved client playing StepCountEnv episodes until stopped."""

    def __init__(
        self, address: tuple[str, int], client_id: int, length: int = 5, **client_kwargs: Any
    ) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.env = StepCountEnv({"client_id": client_id, "length": length})
        self.client_kwargs = client_kwargs
        self.stop_event = threading.Event()
        self.returns: list[float] = []
        self.error: BaseException | None = None
        self.client: ExternalEnvClient | None = None

    def run(self) -> None:
        try:
            self.client = ExternalEnvClient(self.address, TOKEN, **self.client_kwargs)
            self.returns = self.client.run(self.env, should_stop=self.stop_event.is_set)
        except BaseException as exc:  # reported by the test, unless it was told to stop
            if not self.stop_event.is_set():
                self.error = exc

    def stop(self) -> None:
        """Stop now: the client may be waiting for a reply the closed gate holds back."""
        self.stop_event.set()
        if self.client is not None:
            self.client.close()
        self.join(timeout=30)


def wait_until_connected(clients: list[ClientThread], timeout: float = 30.0) -> None:
    """Every client has finished its handshake (a thread may start later than the test goes on)."""
    deadline = time.monotonic() + timeout
    while any(c.client is None and c.error is None for c in clients) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(c.client is not None for c in clients), [c.error for c in clients]


@contextmanager
def running_clients(address: tuple[str, int], ids: list[int], **kwargs: Any) -> Iterator[list[ClientThread]]:
    threads = [ClientThread(address, i, **kwargs) for i in ids]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        for thread in threads:
            thread.stop()


# -- raw protocol access ---------------------------------------------------------------------------
def raw_socket(address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send(sock: socket.socket, message: dict[str, Any], encoding: int = proto.JSON) -> None:
    sock.sendall(proto.encode_frame(message, encoding))


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the server closed the connection."""
    header = _read_exactly(sock, proto.HEADER_SIZE)
    if header is None:
        return None
    length, encoding = struct.unpack(">IB", header)
    body = _read_exactly(sock, length)
    return proto.decode_body(encoding, body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def expect_error_then_close(sock: socket.socket, code: str) -> dict[str, Any]:
    reply = receive(sock)
    assert reply is not None and reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert receive(sock) is None, "the server must close the connection after an error frame"
    sock.close()
    return reply


def hello(sock: socket.socket, token: str = TOKEN, encoding: int = proto.JSON) -> dict[str, Any]:
    send(sock, {"type": "hello", "protocol_version": 1, "token": token}, encoding)
    return receive(sock)


# -- rebuilding episodes from a batch --------------------------------------------------------------
def transitions(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a ``[1, M]`` runner batch as plain dicts (obs ids, flags, reward, action)."""
    obs = batch["observation"][0]
    nxt = batch["next"]["observation"][0]
    rows = []
    for i in range(obs.shape[0]):
        rows.append(
            {
                "client": int(obs[i, 0]),
                "episode": int(obs[i, 1]),
                "t": int(obs[i, 2]),
                "next_t": int(nxt[i, 2]),
                "next_episode": int(nxt[i, 1]),
                "reward": float(batch["next"]["reward"][0, i, 0]),
                "action": int(batch["action"][0, i]),
                "terminated": bool(batch["next"]["terminated"][0, i, 0]),
                "truncated": bool(batch["next"]["truncated"][0, i, 0]),
                "done": bool(batch["next"]["done"][0, i, 0]),
            }
        )
    return rows


def segments(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split rows at ``done`` (each segment must end with done set)."""
    out, current = [], []
    for r in rows:
        current.append(r)
        if r["done"]:
            out.append(current)
            current = []
    assert not current, f"the batch ends inside a segment: {current[-3:]}"
    return out


def check_segment(segment: list[dict[str, Any]], length: int) -> None:
    """Consecutive steps of one episode; reward = 1 + action; flags exactly where they belong."""
    first = segment[0]
    for k, r in enumerate(segment):
        assert (r["client"], r["episode"]) == (first["client"], first["episode"]), segment
        assert r["t"] == first["t"] + k and r["next_t"] == r["t"] + 1 and r["next_episode"] == r["episode"], r
        assert r["reward"] == 1.0 + r["action"], r
        assert r["done"] == (k == len(segment) - 1), r
        if r["done"]:
            assert r["terminated"] == (r["next_t"] == length), r
            assert r["truncated"] == (r["next_t"] < length), r


def log_prob_of(runner: Any, batch: dict[str, Any], policy: Any = None) -> torch.Tensor:
    """Log-probabilities of the stored actions on the stored observations (default: the server policy)."""
    policy = policy or runner.backend.policy
    with torch.no_grad():
        params = policy.net(batch["observation"][0])
        return policy.net.distribution.log_prob(params, batch["action"][0])


# -- hostile-input tests (tests/security/test_server_*.py) -------------------------------------------
def rss_bytes() -> int:
    """Resident memory of this process (the in-process server's), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LegitPlayer(threading.Thread):
    """A well-behaved client that only ever stops between episodes, so every step it sent belongs
    to a finished episode (``steps_sent``) and must reach the learner: the step accounting."""

    def __init__(self, address: tuple[str, int], client_id: int, length: int = 5, max_episodes: int = 10**9):
        super().__init__(daemon=True)
        self.address = address
        self.env = StepCountEnv({"client_id": client_id, "length": length})
        self.max_episodes = max_episodes
        self.stop_event = threading.Event()
        self.steps_sent = 0
        self.episodes = 0
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            with ExternalEnvClient(self.address, TOKEN, timeout_s=120) as client:
                self.connected.set()
                while not self.stop_event.is_set() and self.episodes < self.max_episodes:
                    episode = client.start_episode()
                    obs, _ = self.env.reset()
                    done = False
                    while not done:
                        start = time.perf_counter()
                        action = client.get_action(episode, obs)
                        self.latencies.append(time.perf_counter() - start)
                        obs, reward, terminated, truncated, _ = self.env.step(action)
                        client.log_returns(episode, reward)
                        done = terminated or truncated
                    client.end_episode(episode, obs, terminated=terminated, truncated=truncated)
                    self.steps_sent += self.env.length
                    self.episodes += 1
        except BaseException as exc:
            self.error = exc
        finally:
            self.connected.set()

    def stop(self) -> None:
        """Finish the running episode, then stop (the learner must keep sampling meanwhile)."""
        self.stop_event.set()
        self.join(timeout=60)


class Learner(threading.Thread):
    """Samples the runner back to back (a stand-in for training) and keeps every row by client id."""

    def __init__(self, algo: PPO, runner: Any, steps: int = 20) -> None:
        super().__init__(daemon=True)
        self.algo = algo
        self.runner = runner
        self.steps = steps
        self.stop_event = threading.Event()
        self.rows: list[dict[str, Any]] = []
        self.batches = 0
        self.non_finite = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def run(self) -> None:
        state = self.algo.policy_state()
        while not self.stop_event.is_set():
            try:
                result = self.runner.sample(self.steps, True, state)
            except EnvError:  # sample timeout: not enough steps yet; they are kept
                continue
            except BaseException as exc:
                self.error = exc
                return
            self.non_finite += count_non_finite(result.data)
            with self.lock:
                self.rows += transitions(result.data)
                self.batches += 1

    def received(self, client_id: int) -> int:
        with self.lock:
            return sum(1 for r in self.rows if r["client"] == client_id)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)


def count_non_finite(tree: Any) -> int:
    """NaN/inf entries in a (nested) batch of tensors: the learner must never see one."""
    if isinstance(tree, dict):
        return sum(count_non_finite(v) for v in tree.values())
    if isinstance(tree, tuple | list):
        return sum(count_non_finite(v) for v in tree)
    if isinstance(tree, torch.Tensor) and tree.is_floating_point():
        return int((~torch.isfinite(tree)).sum())
    return 0


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (bounded waits, no wall-clock asserts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
