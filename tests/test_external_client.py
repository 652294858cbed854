"""The Python client: local inference (ONNX/TorchScript), model refresh, uploads, JSON, filters."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch

from lightning_rl.envs.external import ExternalEnvClient, ServerError
from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    TOKEN,
    check_segment,
    expect_error_then_close,
    hello,
    log_prob_of,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    running_clients,
    segments,
    send,
    transitions,
    wait_until_connected,
)


@pytest.fixture
def runner_of():
    made = []

    def build(*args, **kwargs):
        algo = make_algo(*args, **kwargs)
        runner = make_runner(algo)
        made.append(runner)
        return algo, runner

    yield build
    for runner in made:
        runner.stop()


def last_segment_log_probs(runner, data, policy=None) -> tuple[np.ndarray, np.ndarray]:
    """Stored log-probs of the batch's last episode, and ``policy``'s (default: the server's)."""
    rows = transitions(data)
    n = len(segments(rows)[-1])
    stored = data["action_log_prob"][0, -n:].numpy()
    return stored, log_prob_of(runner, data, policy).numpy()[-n:]


@pytest.mark.parametrize("model_format", ["onnx", "torchscript"])
def test_local_inference_uploads_whole_episodes_with_the_policys_log_probs(runner_of, model_format):
    algo, runner = runner_of()
    with running_clients(
        runner.address, [1, 2], length=5, inference="local", model_format=model_format, seed=3
    ) as (
        first,
        _,
    ):
        state = algo.policy_state()
        runner.sample(20, True, state)  # the clients' first episodes ran the pre-training weights
        generator = torch.Generator().manual_seed(0)
        for version in (1, 2):
            old_policy = copy.deepcopy(runner.backend.policy)
            for p in algo.module.policy_net.parameters():
                # A moderate change: large ones saturate the policy, and near-deterministic
                # log-probs (all ~0) cannot tell the old weights from the new.
                p.data.add_(0.3 * torch.randn(p.shape, generator=generator))
            state = algo.policy_state()
            state["version"] = version
            result = runner.sample(40, True, state)
            found = segments(transitions(result.data))
            for segment in found:
                check_segment(segment, 5)
                assert segment[0]["t"] == 0 and segment[-1]["terminated"]
            stored, expected = last_segment_log_probs(runner, result.data)
            assert np.allclose(stored, expected, atol=1e-5), "PPO's ratio needs the behaviour log-probs"
            _, before = last_segment_log_probs(runner, result.data, old_policy)
            assert not np.allclose(stored, before, atol=1e-3), "the episode ran the refreshed model"
        # Client 1 refreshes in its own thread; client 2 may have finished the sample meanwhile.
        deadline = time.monotonic() + 30
        while first.client.model_version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.client.model_version == 2
        assert first.client.num_model_refreshes >= 3
    assert runner.server_stats()["episodes_uploaded"] > 0


def test_greedy_local_episodes_take_the_argmax_action(runner_of):
    algo, runner = runner_of()
    with running_clients(runner.address, [1]):
        runner.sample(10, True, algo.policy_state())  # loads the learner's weights (version 0)
    client = ExternalEnvClient(runner.address, TOKEN, inference="local")
    assert client.model_version == runner.backend.weights_version == 0
    episode = client.start_episode(explore=False)
    for obs in np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32):
        with torch.no_grad():
            logits = runner.backend.policy.net(torch.as_tensor(obs)[None])[0]
        assert client.get_action(episode, obs) == int(logits.argmax())
    client.close()


def test_uploads_that_break_the_rules_are_refused_and_others_continue(runner_of):
    algo, runner = runner_of()
    good = {
        "observations": [[0, 0, 0], [0, 0, 1], [0, 0, 2]],
        "actions": [1, 0],
        "action_log_probs": [-0.7, -0.7],
        "rewards": [2.0, 1.0],
        "terminated": True,
    }
    broken = [
        ({**good, "action_log_probs": None}, "action_log_probs"),
        ({**good, "observations": good["observations"][:2]}, "observations"),
        ({**good, "actions": [1, 5]}, "outside"),
        ({**good, "rewards": [1.0, float("nan")]}, "finite"),
        ({**good, "terminated": False}, "finished"),
        ({**good, "rewards": []}, "at least one step"),
    ]
    with running_clients(runner.address, [1, 2], length=5) as clients:
        wait_until_connected(clients)  # both clients' held requests count in the sample below
        for episode, fragment in broken:
            sock = raw_socket(runner.address)
            assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
            send(sock, {"type": "upload_episodes", "episodes": [episode]}, proto.MSGPACK)
            reply = expect_error_then_close(sock, proto.BAD_REQUEST)
            assert fragment in reply["message"], reply
        sock = raw_socket(runner.address)
        assert hello(sock)["type"] == "welcome"
        send(sock, {"type": "upload_episodes", "episodes": [good]})
        result = runner.sample(20, True, algo.policy_state())
        accepted = receive(sock)
        assert accepted == {
            "type": "episodes_accepted",
            "num_episodes": 1,
            "num_steps": 2,
            "weights_version": 0,
        }
        sock.close()
        rows = transitions(result.data)
        assert [r["t"] for r in rows if r["client"] == 0] == [0, 1]
        assert {r["client"] for r in rows} >= {1, 2}
        assert all(c.error is None for c in clients)


def test_json_clients_work_and_weights_travel_as_base64_arrays(runner_of):
    algo, runner = runner_of()
    with running_clients(runner.address, [1], length=4, encoding="json"):
        result = runner.sample(12, True, algo.policy_state())
        for segment in segments(transitions(result.data)):
            check_segment(segment, 4)
        sock = raw_socket(runner.address)
        assert hello(sock)["type"] == "welcome"
        send(sock, {"type": "get_weights"})
        reply = receive(sock)
        sock.close()
    assert reply["weights_version"] == 0
    weights = {k: proto.unpack_array(v) for k, v in reply["weights"].items()}
    expected = algo.module.policy_weights()
    assert set(weights) == set(expected)
    for name, value in expected.items():
        assert np.array_equal(weights[name], value.numpy())


def test_episodes_without_training_are_served_but_not_learned_from(runner_of):
    algo, runner = runner_of()
    client = ExternalEnvClient(runner.address, TOKEN)
    with running_clients(runner.address, [1], length=5):
        runner.sample(5, True, algo.policy_state())
        hidden = client.start_episode(training_enabled=False)
        import threading

        def play() -> None:
            for t in range(3):
                client.get_action(hidden, np.array([7.0, 0.0, t], np.float32))
            client.end_episode(hidden, np.array([7.0, 0.0, 3.0], np.float32))

        player = threading.Thread(target=play)
        player.start()
        rows = []
        while player.is_alive():
            rows += transitions(runner.sample(5, True, algo.policy_state()).data)
        player.join()
        rows += transitions(runner.sample(5, True, algo.policy_state()).data)
    assert rows and all(r["client"] == 1 for r in rows)
    client.close()


def test_observation_filter_statistics_flow_back_as_connector_deltas(runner_of):
    algo, runner = runner_of(env_to_module_connector=["MeanStdFilter"])
    with running_clients(runner.address, [1, 2], length=5):
        result = runner.sample(30, True, algo.policy_state())
    # An episode that ended after the sample still feeds the filter (on the server's thread):
    # wait until the closed clients' last messages are read, so none lands after set_state.
    deadline = time.monotonic() + 30
    while runner.server_stats()["clients"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runner.server_stats()["clients"] == 0
    (delta,) = result.connector_deltas["default_policy"]
    assert delta["count"] >= result.stats.num_env_steps / 2, "the clients' observations fed the filter"
    algo.merge_connector_deltas([result.connector_deltas])
    assert algo.connector_state["default_policy"][0]["count"] == delta["count"]
    runner.set_state(algo.policy_state())
    assert runner.backend.env_to_module.get_state()[0]["count"] == delta["count"]


def test_a_server_error_reaches_the_client_as_one_exception(runner_of):
    _, runner = runner_of()
    client = ExternalEnvClient(runner.address, TOKEN)
    with pytest.raises(ServerError) as info:
        client.get_action("never-started", np.zeros(3, np.float32))
    assert info.value.code == proto.UNKNOWN_EPISODE
    with pytest.raises(ServerError) as info:
        ExternalEnvClient(runner.address, "wrong")
    assert info.value.code == proto.UNAUTHORIZED


def test_local_inference_of_a_policy_without_a_distribution_is_one_clear_error():
    from lightning_rl.algorithms.dqn import DQN
    from tests.external_helpers import StepCountEnv

    algo = DQN(StepCountEnv, external={"token": TOKEN})
    spec = algo.env_runner_spec(num_envs=1)
    runner = spec.runner_class()(spec)
    try:
        with pytest.raises(ServerError, match="EpsilonGreedyQPolicy is not one") as info:
            ExternalEnvClient(runner.address, TOKEN, inference="local")
        assert info.value.code == proto.BAD_REQUEST
        remote = ExternalEnvClient(runner.address, TOKEN)  # server-side inference works
        assert remote.config["requires_action_log_probs"] is False
        remote.close()
    finally:
        runner.stop()
