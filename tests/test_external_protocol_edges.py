"""The protocol page's answers to a client writer's edge cases, checked over real loopback TCP.

Each test pins one promise of docs/external_env_protocol.md ("Edge cases a client writer
asks about"): episodes of zero steps, a reused episode id, the reward of the first
``get_action``, which requests wait at the gate, uploads without log-probabilities when
training is off, JSON for model bytes, float64 observations, optional space fields, the
address file and ``server_closing``.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.envs.external.spaces_env import ExternalSpacesEnv
from tests.external_helpers import (
    TOKEN,
    expect_error_then_close,
    hello,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    send,
)


def request(sock: socket.socket, message: dict[str, Any]) -> dict[str, Any]:
    send(sock, message)
    reply = receive(sock)
    assert reply is not None, f"the server closed the connection after {message['type']}"
    return reply


def client(runner: Any, timeout: float = 30.0) -> socket.socket:
    sock = raw_socket(runner.address, timeout=timeout)
    assert hello(sock)["type"] == "welcome"
    return sock


@contextmanager
def sampling(algo: Any, runner: Any, steps: int) -> Iterator[dict[str, Any]]:
    """Run one ``sample(steps)`` in a thread (the gate is open while it collects)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = runner.sample(steps, True, algo.policy_state())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield box
    thread.join(timeout=60)
    assert not thread.is_alive(), "sample() did not finish"
    if "error" in box:
        raise box["error"]


@pytest.fixture
def served():
    algo = make_algo(external={"sample_timeout_s": 30.0})
    runner = make_runner(algo)
    yield algo, runner
    runner.stop()


def test_zero_step_episodes_end_cleanly_and_count_for_nothing(served):
    algo, runner = served
    sock = client(runner)
    started = request(sock, {"type": "start_episode"})
    ended = request(
        sock, {"type": "end_episode", "episode_id": started["episode_id"], "observation": [0, 0, 0]}
    )
    assert ended["type"] == "episode_ended" and ended["num_steps"] == 0
    with sampling(algo, runner, 2) as box:  # a real episode of two steps on the same connection
        episode_id = request(sock, {"type": "start_episode"})["episode_id"]
        for t in range(2):
            reply = request(sock, {"type": "get_action", "episode_id": episode_id, "observation": [0, 0, t]})
            assert reply["type"] == "action"
        end = {"type": "end_episode", "episode_id": episode_id, "observation": [0, 0, 2], "reward": 1.0}
        assert request(sock, end)["num_steps"] == 2
    stats = box["result"].stats
    assert stats.lengths == [2] and stats.num_env_steps == 2, "the zero-step episode is not an episode"
    assert runner.server_stats()["errors"] == {}
    sock.close()


def test_episode_ids_are_per_connection_and_reusable_once_ended(served):
    _, runner = served
    first, second = client(runner), client(runner)
    for sock in (first, second):  # the same id on two connections: two episodes
        assert request(sock, {"type": "start_episode", "episode_id": "ep"})["episode_id"] == "ep"
    end = {"type": "end_episode", "episode_id": "ep", "observation": [0, 0, 0]}
    assert request(first, end)["type"] == "episode_ended"
    assert request(first, {"type": "start_episode", "episode_id": "ep"})["type"] == "episode_started"
    # An id that is still running on this connection is a protocol error that closes it.
    send(second, {"type": "start_episode", "episode_id": "ep"})
    reply = expect_error_then_close(second, "bad_request")
    assert "running already" in reply["message"]
    assert request(first, {"type": "ping"})["type"] == "pong", "other connections are unaffected"
    first.close()


def test_the_reward_of_the_first_get_action_is_neither_learned_nor_counted(served):
    algo, runner = served
    sock = client(runner)
    with sampling(algo, runner, 2) as box:
        episode_id = request(sock, {"type": "start_episode"})["episode_id"]
        request(sock, {"type": "log_returns", "episode_id": episode_id, "reward": 100.0})
        for t, reward in enumerate([50.0, 1.0]):  # 50 + 100 precede every action: they earn nothing
            message = {
                "type": "get_action",
                "episode_id": episode_id,
                "observation": [0, 0, t],
                "reward": reward,
            }
            request(sock, message)
        end = {"type": "end_episode", "episode_id": episode_id, "observation": [0, 0, 2], "reward": 2.0}
        request(sock, end)
    result = box["result"]
    assert result.data["next"]["reward"][0, :, 0].tolist() == [1.0, 2.0]
    assert result.stats.returns == [3.0], "the reported return is the sum of the learned rewards"
    sock.close()


def test_only_training_requests_wait_at_the_gate(served):
    algo, runner = served
    # No sample() runs: training off is served at once, action and upload alike.
    eval_sock = client(runner, timeout=10.0)
    episode_id = request(eval_sock, {"type": "start_episode", "training_enabled": False})["episode_id"]
    reply = request(eval_sock, {"type": "get_action", "episode_id": episode_id, "observation": [0, 0, 0]})
    assert reply["type"] == "action"
    upload = {
        "type": "upload_episodes",
        "training_enabled": False,  # no action_log_probs needed: nothing is learned
        "episodes": [
            {"observations": [[0, 0, 0], [0, 0, 1]], "actions": [1], "rewards": [1.0], "terminated": True}
        ],
    }
    assert request(eval_sock, upload)["type"] == "episodes_accepted"
    # A training step waits (the read times out) until the next sample() opens the gate.
    train_sock = client(runner, timeout=1.0)
    episode_id = request(train_sock, {"type": "start_episode"})["episode_id"]
    send(train_sock, {"type": "get_action", "episode_id": episode_id, "observation": [0, 0, 0]})
    with pytest.raises(TimeoutError):
        receive(train_sock)
    train_sock.settimeout(30.0)
    with sampling(algo, runner, 1):
        assert receive(train_sock)["type"] == "action"
        request(train_sock, {"type": "end_episode", "episode_id": episode_id, "observation": [0, 0, 1]})
    # With training on, PPO needs the log-probabilities.
    send(eval_sock, {**upload, "training_enabled": True})
    assert "action_log_probs" in expect_error_then_close(eval_sock, "bad_request")["message"]
    train_sock.close()


def test_model_bytes_travel_as_base64_in_json(served):
    _, runner = served
    sock = client(runner, timeout=120.0)
    reply = request(sock, {"type": "get_model", "format": "onnx"})  # a JSON request: a JSON reply
    assert reply["type"] == "model" and isinstance(reply["data"], str)
    import onnx

    model = onnx.load_from_string(base64.b64decode(reply["data"]))
    assert [i.name for i in model.graph.input] == ["obs", "noise"]
    assert [o.name for o in model.graph.output] == reply["metadata"]["outputs"]
    metadata = reply["metadata"]
    assert metadata["weights_version"] == reply["weights_version"]
    assert metadata["inputs"] == [{"name": "obs", "dtype": "float32", "shape": ["batch", 3]}]
    assert metadata["noise"] == {
        "name": "noise",
        "distribution": "uniform",
        "shape": ["batch", 2],
        "dtype": "float32",
    }
    assert metadata["observation_space"]["type"] == "Box" and metadata["action_space"]["n"] == 2
    sock.close()


def test_float64_observations_are_checked_in_float32_and_learned_in_float32():
    spaces = {
        "observation_space": {"type": "Box", "shape": [2], "dtype": "float64", "low": "-inf", "high": "inf"},
        "action_space": {"type": "Discrete", "n": 2},  # start is optional (0)
    }
    algo = PPO(
        "ExternalSpaces", env_config=spaces, external={"token": TOKEN}, train_batch_size=32, minibatch_size=32
    )
    runner = make_runner(algo)
    try:
        sock = client(runner)
        with sampling(algo, runner, 1) as box:
            episode_id = request(sock, {"type": "start_episode"})["episode_id"]
            observation = [0.1 + 1e-12, 3e38]  # float32-finite; the extra digits are lost in float32
            request(sock, {"type": "get_action", "episode_id": episode_id, "observation": observation})
            end = {"type": "end_episode", "episode_id": episode_id, "observation": [0.0, 0.0]}
            request(sock, end)
        batch_obs = box["result"].data["observation"]
        assert str(batch_obs.dtype) == "torch.float32"
        assert batch_obs[0, 0].tolist() == np.asarray(observation, dtype=np.float32).tolist()
        episode_id = request(sock, {"type": "start_episode", "training_enabled": False})["episode_id"]
        send(sock, {"type": "get_action", "episode_id": episode_id, "observation": [0.0, 1e39]})
        assert "float32" in expect_error_then_close(sock, "bad_request")["message"]
    finally:
        runner.stop()


def test_space_fields_that_may_be_left_out():
    env = ExternalSpacesEnv(
        {
            "observation_space": {"type": "MultiDiscrete", "nvec": [3, 2]},  # start and dtype optional
            "action_space": {"type": "Discrete", "n": 2},
        }
    )
    assert env.observation_space.start.tolist() == [0, 0] and env.action_space.start == 0
    with pytest.raises(Exception, match="dtype"):  # Box needs shape, dtype, low and high
        ExternalSpacesEnv({"observation_space": {"type": "Box", "shape": [2], "low": 0, "high": 1}})


def test_address_file_and_server_closing(tmp_path):
    algo = make_algo(external={"address_file": str(tmp_path / "server-{worker_index}.json")})
    runner = make_runner(algo)
    stopped = False
    try:
        written = json.loads((tmp_path / "server-0.json").read_text())  # in-process runner: index 0
        assert (written["host"], written["port"]) == runner.address and written["pid"] > 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["server-0.json"], "no temporary file is left"
        held, idle = client(runner), client(runner)
        episode_id = request(held, {"type": "start_episode"})["episode_id"]
        send(
            held, {"type": "get_action", "episode_id": episode_id, "observation": [0, 0, 0]}
        )  # held: no sample
        runner.stop()
        stopped = True
        for sock in (held, idle):  # the reply to a held request, and unasked on an idle connection
            reply = expect_error_then_close(sock, "server_closing")
            assert reply["type"] == "error"
    finally:
        if not stopped:
            runner.stop()
