"""An authenticated client cannot bloat the server or stall the others (issue 18, finding 5).

Replies a client does not read are bounded (write flow control: the server stops reading a
client whose replies pile up, and drops it when it has not read for ``timeout_s``); model
exports run on a worker thread, once per weights version and format.
"""

from __future__ import annotations

import threading

import pytest

from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    Learner,
    LegitPlayer,
    hello,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    rss_bytes,
    send,
    wait_for,
)

MAX_OUTBOUND = 256 * 1024


@pytest.fixture(scope="module")
def served():
    algo = make_algo(
        external={"timeout_s": 2.0, "max_outbound_bytes": MAX_OUTBOUND, "sample_timeout_s": 5.0},
    )
    runner = make_runner(algo)
    players = [LegitPlayer(runner.address, i) for i in (1, 2)]
    learner = Learner(algo, runner)
    try:
        for player in players:
            player.start()
        learner.start()
        yield runner, players, learner
    finally:
        for player in players:
            player.stop()
        learner.stop_event.set()
        runner.stop()
        learner.stop()


def still_serving(runner, players, learner) -> None:
    steps = [p.steps_sent for p in players]
    progressed = wait_for(lambda: all(p.steps_sent > s for p, s in zip(players, steps, strict=True)), 60)
    assert progressed, (steps, [p.error for p in players], learner.error, runner.server_stats())
    assert learner.error is None
    assert runner.server_stats()["errors"].get(proto.SERVER_ERROR, 0) == 0


def test_a_client_that_never_reads_its_replies_is_bounded_then_dropped(served):
    runner, players, learner = served
    sock = raw_socket(runner.address, timeout=30)
    assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
    send(sock, {"type": "get_weights"}, proto.MSGPACK)
    reply_size = len(proto.encode_frame(receive(sock), proto.MSGPACK))
    timeouts = runner.server_stats()["errors"].get(proto.TIMEOUT, 0)
    rss_before = rss_bytes()
    # 6,000 pipelined requests (~20 bytes each, ~120 KB: the kernel takes them all at once);
    # answered in full they would be 6,000 weight copies (hundreds of MB) in the server.
    request = proto.encode_frame({"type": "get_weights"}, proto.MSGPACK)
    sock.sendall(request * 6000)
    assert wait_for(lambda: runner.server_stats()["errors"].get(proto.TIMEOUT, 0) > timeouts, 60), (
        "the client that does not read was never dropped"
    )
    stats = runner.server_stats()
    # The server stopped answering once max_outbound_bytes were waiting (+ the reply that crossed it).
    assert stats["peak_outbound_bytes"] <= MAX_OUTBOUND + 2 * reply_size, (stats, reply_size)
    assert rss_bytes() - rss_before < 64 * 1024 * 1024
    sock.close()
    still_serving(runner, players, learner)


def test_a_slow_reader_is_served_in_full_once_it_reads(served):
    """Flow control pauses; it does not lose replies: a client that reads late gets every one."""
    runner, players, learner = served
    sock = raw_socket(runner.address, timeout=30)
    assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
    sock.sendall(proto.encode_frame({"type": "get_weights"}, proto.MSGPACK) * 200)
    replies = [receive(sock) for _ in range(200)]
    assert all(r is not None and r["type"] == "weights" for r in replies)
    sock.close()
    still_serving(runner, players, learner)


def test_model_exports_run_off_the_event_loop_once_per_weights_version(served, monkeypatch):
    runner, players, learner = served
    backend = runner.backend
    release = threading.Event()
    exports = []
    real_job = backend.model_job

    def held_job(fmt):
        job = real_job(fmt)

        def run():
            exports.append((fmt, threading.current_thread().name))
            assert release.wait(60)
            return job()

        return run

    monkeypatch.setattr(backend, "model_job", held_job)
    socks = []
    for _ in range(3):
        sock = raw_socket(runner.address, timeout=60)
        assert hello(sock, encoding=proto.MSGPACK)["type"] == "welcome"
        send(sock, {"type": "get_model", "format": "torchscript"}, proto.MSGPACK)
        socks.append(sock)
    # While the export is held, the event loop keeps serving actions to the other clients.
    steps = [p.steps_sent for p in players]
    assert wait_for(lambda: all(p.steps_sent > s + 10 for p, s in zip(players, steps, strict=True)), 60)
    release.set()
    replies = [receive(sock) for sock in socks]
    assert [r["type"] for r in replies] == ["model"] * 3
    assert len({bytes(r["data"]) for r in replies}) == 1
    assert len(exports) == 1 and exports[0][1].startswith("external-env-export")
    sock = socks[0]  # cached: no second export for the same weights version
    send(sock, {"type": "get_model", "format": "torchscript"}, proto.MSGPACK)
    assert receive(sock)["type"] == "model" and len(exports) == 1
    for sock in socks:
        sock.close()
    still_serving(runner, players, learner)
