"""One client keeping an episode open cannot stop training (issue 18, finding 6).

In ``complete_episodes`` mode a sample waits for the running episodes to end once enough steps
arrived; an episode still running ``drain_timeout_s`` later is dropped from training (its
client keeps being served), and the sample goes on with what the others delivered.
"""

from __future__ import annotations

import threading

from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    check_segment,
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

HOLDER = 9  # the first observation element of the episode that is never ended


def test_an_episode_held_open_is_dropped_and_training_goes_on():
    algo = make_algo(
        "complete_episodes",
        external={"timeout_s": 30.0, "drain_timeout_s": 1.0, "sample_timeout_s": 60.0},
    )
    runner = make_runner(algo)
    holder = raw_socket(runner.address, timeout=60)
    stop = threading.Event()
    holder_error: list[BaseException] = []
    holding = threading.Event()

    def hold_an_episode_open() -> None:
        """Start an episode, take 3 actions, then only ping: alive, but the episode never ends."""
        try:
            assert hello(holder)["type"] == "welcome"
            send(holder, {"type": "start_episode", "episode_id": "forever"})
            assert receive(holder)["type"] == "episode_started"
            for t in range(3):
                send(holder, {"type": "get_action", "episode_id": "forever", "observation": [HOLDER, 0, t]})
                assert receive(holder)["type"] == "action"
            holding.set()
            while not stop.wait(0.2):
                send(holder, {"type": "ping"})
                assert receive(holder)["type"] == "pong"
        except BaseException as exc:
            holder_error.append(exc)
            holding.set()

    thread = threading.Thread(target=hold_an_episode_open, daemon=True)
    try:
        with running_clients(runner.address, [1, 2], length=5) as clients:
            thread.start()
            rows = []
            for _ in range(10):  # until the held episode was dropped, then two more samples
                rows += transitions(runner.sample(20, True, algo.policy_state()).data)
                if runner.server_stats()["abandoned_episodes"]:
                    break
            assert holding.is_set()
            for _ in range(2):
                rows += transitions(runner.sample(20, True, algo.policy_state()).data)
            stats = runner.server_stats()
            assert not holder_error, holder_error
            assert all(c.error is None and c.is_alive() for c in clients)
        assert stats["abandoned_episodes"] == 1, stats
        assert all(r["client"] != HOLDER for r in rows), "nothing of the held episode is learned from"
        assert {r["client"] for r in rows} == {1, 2}
        for segment in segments(rows):
            check_segment(segment, 5)
            assert segment[0]["t"] == 0 and segment[-1]["terminated"]  # whole episodes only
        # The holder is still served: its episode goes on, it just is not learned from.
        stop.set()
        thread.join(timeout=30)
        send(holder, {"type": "end_episode", "episode_id": "forever", "observation": [HOLDER, 0, 3]})
        reply = receive(holder)
        assert reply["type"] == "episode_ended" and reply["num_steps"] == 3
        assert runner.server_stats()["errors"].get(proto.SERVER_ERROR, 0) == 0
    finally:
        stop.set()
        holder.close()
        runner.stop()
