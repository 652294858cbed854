"""Poison values and protocol edge cases against a live policy server (issue 18, findings 2 and 9).

One authenticated client must not be able to put a value into the learner's batch that is not
finite in float32 (the training dtype), or that no policy can produce; it gets ``bad_request``,
its episode is dropped, and the learner's next batch holds only finite values from the others.
Edge cases of the wire format are the client's fault (``bad_request``/``unauthorized``), never
``server_error``.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    TOKEN,
    Learner,
    expect_error_then_close,
    hello,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    running_clients,
    send,
    wait_for,
)

POISONER = 7.0  # the first observation element of the hostile client's episodes


@pytest.fixture(scope="module")
def served():
    """A server, two good clients and a learner sampling back to back for the whole module."""
    algo = make_algo(external={"timeout_s": 10.0, "sample_timeout_s": 5.0})
    runner = make_runner(algo)
    learner = Learner(algo, runner)
    try:
        with running_clients(runner.address, [1, 2], length=5) as clients:
            learner.start()
            yield learner, runner, clients
    finally:
        learner.stop_event.set()
        runner.stop()  # ends a sample the learner may be waiting in
        learner.stop()


def started(runner, encoding=proto.JSON):
    """An authenticated socket with one running training episode that has taken one action."""
    sock = raw_socket(runner.address, timeout=30)
    assert hello(sock, encoding=encoding)["type"] == "welcome"
    send(sock, {"type": "start_episode", "episode_id": "p"}, encoding)
    assert receive(sock)["type"] == "episode_started"
    return sock


def send_raw_json(sock, text: str) -> None:
    body = text.encode("utf-8")
    sock.sendall(struct.pack(">IB", len(body), proto.JSON) + body)


def learner_batch_is_clean(learner, runner, clients) -> None:
    """Later batches keep coming, every value the learner got is finite, nothing the poisoner sent
    after its last good step arrived (its delivered rows carry the reward 1.0 it sent), and the
    good clients go on."""
    batches = learner.batches
    assert wait_for(lambda: learner.batches >= batches + 2), "the learner stopped getting batches"
    assert learner.error is None and learner.non_finite == 0
    with learner.lock:
        poisoned = [r for r in learner.rows if r["client"] == POISONER]
    assert all(r["reward"] == 1.0 for r in poisoned), poisoned
    for client in clients:
        assert client.error is None and client.is_alive()
    assert runner.server_stats()["errors"].get(proto.SERVER_ERROR, 0) == 0


OBS = [POISONER, 0.0, 0.0]

STEP_POISON = [
    # name, messages after start_episode (the last one must be refused)
    (
        "get_action_reward_1e39",
        [{"type": "get_action", "episode_id": "p", "observation": OBS, "reward": 1e39}],
    ),
    ("log_returns_reward_1e39", [{"type": "log_returns", "episode_id": "p", "reward": 1e39}]),
    (
        "end_episode_reward_-1e39",
        [{"type": "end_episode", "episode_id": "p", "observation": OBS, "reward": -1e39}],
    ),
    ("reward_above_max_abs_reward", [{"type": "log_returns", "episode_id": "p", "reward": 1e12}]),
    (
        "rewards_summing_beyond_the_limit",
        [
            {"type": "log_returns", "episode_id": "p", "reward": 6e8},
            {"type": "log_returns", "episode_id": "p", "reward": 6e8},
        ],
    ),
    ("observation_1e39", [{"type": "get_action", "episode_id": "p", "observation": [POISONER, 1e39, 0.0]}]),
]


@pytest.mark.parametrize("messages", [m for _, m in STEP_POISON], ids=[n for n, _ in STEP_POISON])
def test_poisoned_steps_get_bad_request_and_their_episode_is_dropped(served, messages):
    learner, runner, clients = served
    before = runner.server_stats()
    sock = started(runner)
    # A few good steps first: the episode has something in flight that must be dropped.
    for t in range(3):
        message = {"type": "get_action", "episode_id": "p", "observation": [POISONER, 0.0, float(t)]}
        send(sock, {**message, "reward": 1.0})
        assert receive(sock)["type"] == "action"
    for message in messages[:-1]:
        send(sock, message)
        assert receive(sock)["type"] == "ok"
    send(sock, messages[-1])
    reply = expect_error_then_close(sock, proto.BAD_REQUEST)
    assert "reward" in reply["message"] or "observation" in reply["message"]
    after = runner.server_stats()
    assert after["lost_episodes"] == before["lost_episodes"] + 1
    learner_batch_is_clean(learner, runner, clients)


def upload(**overrides):
    episode = {
        "observations": [[POISONER, 0.0, 0.0], [POISONER, 0.0, 1.0], [POISONER, 0.0, 2.0]],
        "actions": [1, 0],
        "action_log_probs": [-0.7, -0.69],
        "rewards": [1.0, 1.0],
        "terminated": True,
    }
    episode.update(overrides)
    return {"type": "upload_episodes", "episodes": [episode]}


UPLOAD_POISON = {
    "log_prob_-1e30": upload(action_log_probs=[-1e30, -0.7]),
    "log_prob_-inf_in_float32": upload(action_log_probs=[-0.7, -1e39]),
    "log_prob_of_a_discrete_action_above_0": upload(action_log_probs=[5.0, -0.7]),
    "reward_1e39": upload(rewards=[1e39, 1.0]),
    "reward_packed_float64_1e39": upload(
        rewards={"dtype": "float64", "shape": [2], "data": np.array([1.0, 1e39]).astype("<f8").tobytes()}
    ),
    "observation_packed_float64_1e39": upload(
        observations={
            "dtype": "float64",
            "shape": [3, 3],
            "data": np.array([[7, 0, 0], [7, 1e39, 1], [7, 0, 2]], dtype="<f8").tobytes(),
        }
    ),
}


@pytest.mark.parametrize("message", list(UPLOAD_POISON.values()), ids=list(UPLOAD_POISON))
def test_poisoned_uploads_get_bad_request(served, message):
    learner, runner, clients = served
    sock = raw_socket(runner.address, timeout=30)
    assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
    send(sock, message, proto.MSGPACK)
    expect_error_then_close(sock, proto.BAD_REQUEST)
    learner_batch_is_clean(learner, runner, clients)


def test_a_legitimate_upload_still_passes(served):
    learner, runner, clients = served
    sock = raw_socket(runner.address, timeout=30)
    assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
    send(sock, upload(), proto.MSGPACK)
    assert receive(sock)["type"] == "episodes_accepted"
    sock.close()
    assert wait_for(lambda: learner.received(int(POISONER)) >= 2), "the good upload reached the learner"
    learner_batch_is_clean(learner, runner, clients)


# -- finding 9: edge cases of the wire format ---------------------------------------------------------
def test_a_token_with_a_lone_surrogate_is_unauthorized(served):
    learner, runner, clients = served
    sock = raw_socket(runner.address)
    send_raw_json(sock, '{"type": "hello", "protocol_version": 1, "token": "\\ud800' + TOKEN + '"}')
    expect_error_then_close(sock, proto.UNAUTHORIZED)
    learner_batch_is_clean(learner, runner, clients)


EDGE_CASES = {
    "packed_shape_0_x_2^62": '{"type": "get_action", "episode_id": "p", '
    '"observation": {"dtype": "float32", "shape": [0, 4611686018427387904], "data": ""}}',
    "packed_shape_of_bools": '{"type": "get_action", "episode_id": "p", '
    '"observation": {"dtype": "float32", "shape": [true, 3], "data": "AAAAAAAAAAAAAAAA"}}',
    "packed_dtype_not_a_string": '{"type": "get_action", "episode_id": "p", '
    '"observation": {"dtype": ["float32"], "shape": [3], "data": ""}}',
    "reward_of_401_digits": '{"type": "log_returns", "episode_id": "p", "reward": ' + "9" * 401 + "}",
    "reward_nan": '{"type": "log_returns", "episode_id": "p", "reward": NaN}',
    "observation_of_huge_integers": '{"type": "get_action", "episode_id": "p", "observation": [1, 2, '
    + "9" * 401
    + "]}",
    "ragged_observation": '{"type": "get_action", "episode_id": "p", "observation": [[1], [2, 3], 4]}',
    "upload_with_a_packed_length_that_is_no_number": '{"type": "upload_episodes", "episodes": [{"rewards": '
    '{"dtype": "float32", "shape": ["x"], "data": ""}, "observations": [], "actions": []}]}',
    "upload_episode_list_of_garbage": '{"type": "upload_episodes", "episodes": [null, 3]}',
}


@pytest.mark.parametrize("text", list(EDGE_CASES.values()), ids=list(EDGE_CASES))
def test_wire_format_edge_cases_are_bad_requests_not_server_errors(served, text):
    learner, runner, clients = served
    sock = started(runner)
    send_raw_json(sock, text)
    expect_error_then_close(sock, proto.BAD_REQUEST)
    learner_batch_is_clean(learner, runner, clients)


def test_unpack_array_bounds_shapes_before_numpy_sees_them():
    with pytest.raises(proto.ProtocolError) as info:
        proto.unpack_array({"dtype": "float32", "shape": [0, 2**62], "data": b""})
    assert info.value.code == proto.BAD_REQUEST
    with pytest.raises(proto.ProtocolError):
        proto.unpack_array({"dtype": "float32", "shape": [1] * 33, "data": b"\0" * 4})
    assert proto.unpack_array({"dtype": "float32", "shape": [0, 3], "data": b""}).shape == (0, 3)


def test_numbers_are_checked_as_float32():
    message = {"type": "log_returns", "reward": 1e39}
    with pytest.raises(proto.ProtocolError):
        proto.number(message, "reward")
    with pytest.raises(proto.ProtocolError):
        proto.number({"type": "x", "reward": 10**401}, "reward")
    assert proto.number({"type": "x", "reward": 3e38}, "reward") == 3e38
    with pytest.raises(proto.ProtocolError):
        proto.numbers([1.0, 1e39], 2, "rewards")
    with pytest.raises(proto.ProtocolError):
        proto.numbers([-1e30], 1, "action_log_probs", low=-1e3, high=0.0)
    # Box observations of an integer dtype: no silent wrap-around (300 -> 44 for uint8)
    from gymnasium import spaces

    with pytest.raises(proto.ProtocolError):
        proto.decode_value([300, 1], spaces.Box(0, 255, (2,), np.uint8))
    assert json.dumps(proto.decode_value([255, 1], spaces.Box(0, 255, (2,), np.uint8)).tolist()) == "[255, 1]"
