"""The policy server over real loopback TCP: hostile input, killed clients, exact batches.

Every robustness test runs next to well-behaved clients and then samples again: the server must
answer the bad connection with one error frame and close it, keep serving the others, and hand
the learner only properly ended segments.
"""

from __future__ import annotations

import copy
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    TOKEN,
    check_segment,
    expect_error_then_close,
    hello,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    running_clients,
    segments,
    send,
    transitions,
)

LENGTH = 5  # StepCountEnv episode length used by the background clients


@pytest.fixture(scope="module")
def served():
    """One server (truncate mode, short timeouts) with two well-behaved clients for the whole module."""
    algo = make_algo(external={"timeout_s": 2.0, "handshake_timeout_s": 1.0, "max_clients": 8})
    runner = make_runner(algo)
    with running_clients(runner.address, [1, 2], length=LENGTH) as clients:
        yield algo, runner, clients
    runner.stop()


def sample_and_check(algo, runner, steps: int = 40) -> list[list[dict]]:
    """Sample once and check every segment of the batch; returns them."""
    result = runner.sample(steps, True, algo.policy_state())
    rows = transitions(result.data)
    assert len(rows) >= steps
    found = segments(rows)
    for segment in found:
        check_segment(segment, LENGTH)
    return found


def assert_still_serving(algo, runner, clients) -> None:
    found = sample_and_check(algo, runner)
    assert {s[0]["client"] for s in found} == {1, 2}, "both good clients keep delivering"
    for client in clients:
        assert client.error is None and client.is_alive()


def error_count(runner, code: str) -> int:
    return runner.server_stats()["errors"].get(code, 0)


def test_wrong_or_missing_token_is_refused_in_constant_time(served):
    algo, runner, clients = served
    before = error_count(runner, proto.UNAUTHORIZED)
    for token in ["wrong", TOKEN[:-1], TOKEN + "x", ""]:
        sock = raw_socket(runner.address)
        reply = hello(sock, token)
        assert reply["type"] == "error" and reply["code"] == proto.UNAUTHORIZED
        assert receive(sock) is None
    sock = raw_socket(runner.address)
    send(sock, {"type": "hello", "protocol_version": 1})
    expect_error_then_close(sock, proto.UNAUTHORIZED)
    assert error_count(runner, proto.UNAUTHORIZED) == before + 5
    assert_still_serving(algo, runner, clients)


def test_messages_before_the_handshake_and_wrong_versions_are_refused(served):
    algo, runner, clients = served
    sock = raw_socket(runner.address)
    send(sock, {"type": "get_config"})
    expect_error_then_close(sock, proto.HANDSHAKE_REQUIRED)
    sock = raw_socket(runner.address)
    send(sock, {"type": "hello", "protocol_version": 99, "token": TOKEN})
    reply = expect_error_then_close(sock, proto.UNSUPPORTED_VERSION)
    assert "[1]" in reply["message"]
    assert_still_serving(algo, runner, clients)


def test_oversized_frame_is_refused_before_its_body_is_read(served):
    algo, runner, clients = served
    sock = raw_socket(runner.address)
    assert hello(sock)["type"] == "welcome"
    sock.sendall(struct.pack(">IB", 8 * 1024 * 1024 + 1, proto.MSGPACK))  # no body follows
    reply = expect_error_then_close(sock, proto.FRAME_TOO_LARGE)
    assert "8388608" in reply["message"]
    assert_still_serving(algo, runner, clients)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a length that is too large
        struct.pack(">IB", 4, 7) + b"abcd",  # unknown encoding byte
        struct.pack(">IB", 5, proto.JSON) + b"\xff\xfe{}x",  # not UTF-8 JSON
        struct.pack(">IB", 3, proto.MSGPACK) + b"\xc1\xc1\xc1",  # invalid msgpack
        proto.encode_frame({"no_type": 1}),  # not a message
        struct.pack(">IB", 2, proto.JSON) + b"[]",  # JSON, but not a map
    ],
    ids=["http", "encoding", "utf8", "msgpack", "no-type", "list"],
)
def test_garbage_bytes_get_an_error_frame_and_a_close(served, garbage):
    algo, runner, clients = served
    sock = raw_socket(runner.address)
    sock.sendall(garbage)
    reply = receive(sock)
    assert reply["type"] == "error" and reply["code"] in {proto.BAD_FRAME, proto.FRAME_TOO_LARGE}
    assert receive(sock) is None
    assert_still_serving(algo, runner, clients)


def test_truncated_frames_cost_only_their_connection(served):
    algo, runner, clients = served
    before = error_count(runner, "truncated_frame")
    sock = raw_socket(runner.address)
    assert hello(sock)["type"] == "welcome"
    frame = proto.encode_frame({"type": "start_episode"})
    sock.sendall(frame[:-3])  # the rest never comes
    sock.close()
    deadline = time.monotonic() + 5
    while error_count(runner, "truncated_frame") == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert error_count(runner, "truncated_frame") == before + 1
    # A frame cut short that stays open is closed by the per-connection timeout.
    sock = raw_socket(runner.address)
    assert hello(sock)["type"] == "welcome"
    sock.sendall(frame[:4])
    expect_error_then_close(sock, proto.TIMEOUT)
    assert_still_serving(algo, runner, clients)


def test_unknown_message_types_and_bad_fields_are_refused(served):
    algo, runner, clients = served
    sock = raw_socket(runner.address)
    assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
    send(sock, {"type": "EPISODES_AND_GET_STATE"}, proto.MSGPACK)
    reply = expect_error_then_close(sock, proto.UNKNOWN_MESSAGE_TYPE)
    assert "get_action" in reply["message"]
    bad_requests = [
        ({"type": "get_action", "episode_id": "nope", "observation": [0, 0, 0]}, proto.UNKNOWN_EPISODE),
        ({"type": "get_action", "episode_id": 7}, proto.BAD_REQUEST),
        ({"type": "hello", "protocol_version": 1, "token": TOKEN}, proto.BAD_REQUEST),
    ]
    for message, code in bad_requests:
        sock = raw_socket(runner.address)
        assert hello(sock)["type"] == "welcome"
        send(sock, message)
        expect_error_then_close(sock, code)
    assert_still_serving(algo, runner, clients)


@pytest.mark.parametrize(
    "observation",
    [[0.0, 0.0], [0.0, float("nan"), 0.0], "abc", {"dtype": "float32", "shape": [3], "data": b"\x00" * 5}],
    ids=["shape", "nan", "string", "bytes"],
)
def test_observations_that_do_not_fit_the_space_are_refused(served, observation):
    algo, runner, clients = served
    sock = raw_socket(runner.address)
    assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
    send(sock, {"type": "start_episode", "episode_id": "e"}, proto.MSGPACK)
    assert receive(sock)["type"] == "episode_started"
    send(sock, {"type": "get_action", "episode_id": "e", "observation": observation}, proto.MSGPACK)
    reply = expect_error_then_close(sock, proto.BAD_REQUEST)
    assert "observation" in reply["message"]
    assert_still_serving(algo, runner, clients)


def test_idle_connections_and_silent_handshakes_time_out(served):
    algo, runner, clients = served
    silent = raw_socket(runner.address)  # never says hello
    idle = raw_socket(runner.address)
    assert hello(idle)["type"] == "welcome"
    expect_error_then_close(silent, proto.TIMEOUT)
    expect_error_then_close(idle, proto.TIMEOUT)
    assert_still_serving(algo, runner, clients)


def test_connections_beyond_max_clients_are_refused(served):
    algo, runner, clients = served
    extra = [raw_socket(runner.address) for _ in range(6)]  # 2 clients + 6 = the limit of 8
    for sock in extra:
        assert hello(sock)["type"] == "welcome"
    refused = raw_socket(runner.address)
    expect_error_then_close(refused, proto.TOO_MANY_CLIENTS)
    for sock in extra:
        sock.close()
    assert_still_serving(algo, runner, clients)


KILLED_CLIENT = """
import sys, numpy as np
from lightning_rl.envs.external import ExternalEnvClient
client = ExternalEnvClient(("{host}", {port}), "{token}")
episode = client.start_episode()
for t in range({steps}):
    client.get_action(episode, np.array([9.0, 0.0, float(t)], np.float32))
    client.log_returns(episode, 1.0)
print("mid-episode", flush=True)
sys.stdin.read()  # wait to be killed
"""


@pytest.mark.parametrize("batch_mode", ["truncate_episodes", "complete_episodes"])
def test_a_client_killed_mid_episode_loses_only_that_episode(batch_mode):
    """A real client process is SIGKILLed mid-episode while another client keeps playing.

    complete_episodes: nothing of the killed episode ever reaches the learner.
    truncate_episodes: what reached the learner before the kill are properly cut fragments
    (truncated, with their true next observation); the rest is dropped; never a half segment.
    """
    algo = make_algo(batch_mode)
    runner = make_runner(algo)
    script = KILLED_CLIENT.format(host=runner.host, port=runner.port, token=TOKEN, steps=30)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def kill_when_mid_episode() -> None:
        if "mid-episode" in proc.stdout.readline():
            os.kill(proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_mid_episode, daemon=True)
    killer.start()
    try:
        with running_clients(runner.address, [1], length=LENGTH) as clients:
            collected = []
            deadline = time.monotonic() + 60
            while runner.server_stats()["lost_episodes"] == 0:
                assert time.monotonic() < deadline, "the killed client was never noticed"
                collected += transitions(runner.sample(20, True, algo.policy_state()).data)
            for _ in range(3):
                collected += transitions(runner.sample(20, True, algo.policy_state()).data)
            assert clients[0].error is None and clients[0].is_alive()
            stats = runner.server_stats()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert stats["lost_episodes"] == 1 and stats["errors"] == {}
        killed = [r for r in collected if r["client"] == 9]
        good = [r for r in collected if r["client"] == 1]
        assert len(good) > 40
        for segment in segments(good):
            check_segment(segment, LENGTH)
        if batch_mode == "complete_episodes":
            assert killed == [], "no part of the killed episode may reach the learner"
        else:
            for segment in segments(killed):  # cut fragments: consecutive, ending truncated
                assert segment[-1]["truncated"] and not segment[-1]["terminated"]
                assert [r["t"] for r in segment] == list(
                    range(segment[0]["t"], segment[0]["t"] + len(segment))
                )
            assert 0 < len(killed) < 30, (
                "fragments before the last cut arrived, the steps after it were dropped"
            )
    finally:
        proc.kill()
        runner.stop()


def test_truncate_mode_cuts_running_episodes_and_continues_them(tmp_path):
    algo = make_algo(external={"address_file": str(tmp_path / "address.json")})
    runner = make_runner(algo)
    try:
        assert (tmp_path / "address.json").read_text().count(str(runner.port)) == 1
        with running_clients(runner.address, [1, 2, 3], length=7):
            rows = []
            for _ in range(6):
                result = runner.sample(10, True, algo.policy_state())
                assert result.stats.num_env_steps == result.data["next"]["reward"].shape[1] >= 10
                assert len(result.stats.returns) == len(result.stats.lengths)
                rows += transitions(result.data)
        for client in (1, 2, 3):
            mine = [r for r in rows if r["client"] == client]
            for segment in segments(mine):
                check_segment(segment, 7)
            # Fragments of one episode chain: the steps of each delivered episode are 0, 1, 2, ...
            by_episode: dict[int, list[int]] = {}
            for r in mine:
                by_episode.setdefault(r["episode"], []).append(r["t"])
            for steps in by_episode.values():
                assert steps == list(range(len(steps)))
    finally:
        runner.stop()


def test_complete_mode_batches_hold_only_whole_episodes():
    algo = make_algo("complete_episodes")
    runner = make_runner(algo)
    try:
        with running_clients(runner.address, [1, 2, 3], length=6):
            for _ in range(4):
                result = runner.sample(10, True, algo.policy_state())
                found = segments(transitions(result.data))
                for segment in found:
                    check_segment(segment, 6)
                    assert segment[0]["t"] == 0 and segment[-1]["terminated"]
                assert len(result.stats.returns) == len(found)
                assert result.stats.lengths == [6] * len(found)
                assert result.stats.returns == [sum(r["reward"] for r in s) for s in found]
    finally:
        runner.stop()


def test_served_actions_carry_the_policys_log_probs_and_follow_new_weights():
    """After new weights arrive every action is sampled with them; only the first transition of
    an episode that straddles the cut was acted before it, and it keeps the log-prob it was
    sampled with (the behaviour probability PPO's ratio needs)."""
    algo = make_algo()
    runner = make_runner(algo)
    try:
        with running_clients(runner.address, [1, 2], length=5):
            result = runner.sample(30, True, algo.policy_state())
            assert np.allclose(result.data["action_log_prob"][0], _log_probs(runner, result.data), atol=1e-5)
            old_policy = copy.deepcopy(runner.backend.policy)
            generator = torch.Generator().manual_seed(0)
            for p in algo.module.policy_net.parameters():
                # A moderate change: large ones saturate the policy, and near-deterministic
                # log-probs (all ~0) cannot tell the old weights from the new.
                p.data.add_(0.3 * torch.randn(p.shape, generator=generator))
            state = algo.policy_state()
            state["version"] = 7
            result = runner.sample(30, True, state)
        assert result.weights_version == 7
        stored = result.data["action_log_prob"][0].numpy()
        new = _log_probs(runner, result.data)
        old = _log_probs(runner, result.data, old_policy)
        rows = transitions(result.data)
        first = [i == 0 or rows[i - 1]["done"] for i in range(len(rows))]
        later = ~np.array(first)
        assert np.allclose(stored[later], new[later], atol=1e-5)
        assert not np.allclose(old[later], new[later], atol=1e-3), "the new weights changed the policy"
        for i in np.flatnonzero(first):
            assert np.isclose(stored[i], new[i], atol=1e-5) or np.isclose(stored[i], old[i], atol=1e-5)
    finally:
        runner.stop()


def _log_probs(runner, data, policy=None):
    policy = policy or runner.backend.policy
    with torch.no_grad():
        params = policy.net(data["observation"][0])
        return policy.net.distribution.log_prob(params, data["action"][0]).numpy()
