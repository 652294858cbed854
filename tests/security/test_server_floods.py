"""Pre-authentication floods against a live policy server (issue 18, finding 4).

Someone without the token may open sockets and send bytes, nothing more: before its ``hello``
is accepted a socket's frames are capped at a few KiB (checked from the header, before the
body is read or decoded), such sockets have their own small limit and a short handshake
timeout, and they never take the places of authenticated clients. Meanwhile good clients keep
playing and the learner keeps getting every step they send.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import msgpack
import pytest

from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    Learner,
    LegitPlayer,
    expect_error_then_close,
    hello,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    rss_bytes,
    send,
    wait_for,
)

MAX_UNAUTHENTICATED = 8


@pytest.fixture(scope="module")
def served():
    algo = make_algo(
        external={
            "timeout_s": 10.0,
            "handshake_timeout_s": 1.0,
            "max_clients": 8,
            "max_unauthenticated": MAX_UNAUTHENTICATED,
            "sample_timeout_s": 5.0,
        }
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
        runner.stop()  # ends a sample the learner may be waiting in
        learner.stop()


def still_serving(runner, players, learner) -> None:
    """Good clients keep playing and every step they finished reaches the learner (or is buffered)."""
    steps = [p.steps_sent for p in players]
    progressed = wait_for(lambda: all(p.steps_sent > s for p, s in zip(players, steps, strict=True)), 60)
    assert progressed, (
        steps,
        [p.error for p in players],
        learner.error,
        learner.batches,
        runner.server_stats(),
    )
    for player in players:
        assert player.error is None and player.is_alive()
    assert learner.error is None and learner.non_finite == 0
    stats = runner.server_stats()
    assert stats["errors"].get(proto.SERVER_ERROR, 0) == 0


def msgpack_bomb() -> bytes:
    """A hello with a wrong token and a list of nils just under 8 MiB (the authenticated frame limit):
    ~64 MB of Python objects if decoded."""
    body = msgpack.packb(
        {"type": "hello", "protocol_version": 1, "token": "wrong", "pad": [None] * ((8 << 20) - 100)}
    )
    return struct.pack(">IB", len(body), proto.MSGPACK) + body


def test_msgpack_bombs_with_a_wrong_token_are_refused_from_their_header(served):
    runner, players, learner = served
    bomb = msgpack_bomb()
    refused_before = runner.server_stats()["errors"].get(proto.FRAME_TOO_LARGE, 0)
    rss_before = rss_bytes()
    codes: list[str] = []

    def attack() -> None:
        sock = raw_socket(runner.address, timeout=30)
        with contextlib.suppress(OSError):  # the server may close before the whole bomb is sent
            sock.sendall(bomb)
        reply = receive(sock)
        codes.append(reply["code"] if reply else "closed")
        sock.close()

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(6)]
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join(timeout=60)
    # The server refuses each from its header (a reset may beat the error frame to the client).
    assert set(codes) <= {proto.FRAME_TOO_LARGE, "closed"} and len(codes) == 6, codes
    assert runner.server_stats()["errors"].get(proto.FRAME_TOO_LARGE, 0) == refused_before + 6
    # The bodies were never buffered whole nor decoded (each would cost ~8 MiB + ~64 MB).
    assert rss_bytes() - rss_before < 64 * 1024 * 1024
    still_serving(runner, players, learner)


def test_half_sent_frames_before_hello_are_refused_and_bounded(served):
    runner, players, learner = served
    refused_before = runner.server_stats()["errors"].get(proto.FRAME_TOO_LARGE, 0)
    for _ in range(40):
        sock = raw_socket(runner.address, timeout=30)
        sock.sendall(struct.pack(">IB", 8 << 20, proto.MSGPACK) + b"\x00" * 65536)  # body never finished
        reply = receive(sock)
        assert reply is None or reply["code"] == proto.FRAME_TOO_LARGE, reply
        sock.close()
    # A frame under the pre-auth cap that is never finished: the handshake timeout ends it.
    sock = raw_socket(runner.address, timeout=30)
    sock.sendall(struct.pack(">IB", 2000, proto.JSON) + b"{" * 100)
    expect_error_then_close(sock, proto.TIMEOUT)
    stats = runner.server_stats()
    assert stats["errors"].get(proto.FRAME_TOO_LARGE, 0) == refused_before + 40
    assert stats["unauthenticated"] <= MAX_UNAUTHENTICATED
    still_serving(runner, players, learner)


def test_a_hello_larger_than_the_pre_auth_cap_is_refused_but_the_limit_is_lifted_after(served):
    runner = served[0]
    sock = raw_socket(runner.address)
    send(sock, {"type": "hello", "protocol_version": 1, "token": "x" * (proto.PRE_AUTH_MAX_FRAME_BYTES + 10)})
    reply = expect_error_then_close(sock, proto.FRAME_TOO_LARGE)
    assert str(proto.PRE_AUTH_MAX_FRAME_BYTES) in reply["message"]
    sock = raw_socket(runner.address)
    assert hello(sock)["type"] == "welcome"
    send(sock, {"type": "ping", "pad": "x" * 100_000})  # authenticated: max_frame_bytes applies
    assert receive(sock)["type"] == "pong"
    sock.close()


def test_idle_sockets_reopened_by_an_attacker_do_not_lock_out_clients(served):
    """An attacker keeps max_unauthenticated idle sockets open (more than the places max_clients
    leaves), reopening each one the server closes (handshake timeout, or making room); 20 new
    clients in a row still get in, and the authenticated ones never lose their place."""
    runner, players, learner = served
    stop = threading.Event()
    opened = [0]

    def hold_idle_sockets() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            for sock in list(held):  # drop what the server closed
                sock.setblocking(False)
                try:
                    if sock.recv(1 << 16) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                held.remove(sock)
                sock.close()
            while len(held) < MAX_UNAUTHENTICATED and not stop.is_set():
                try:
                    held.append(socket.create_connection(runner.address, timeout=5))
                    opened[0] += 1
                except OSError:
                    break
            stop.wait(0.01)
        for sock in held:
            sock.close()

    attacker = threading.Thread(target=hold_idle_sockets, daemon=True)
    attacker.start()
    try:
        assert wait_for(lambda: opened[0] >= MAX_UNAUTHENTICATED)
        for _ in range(20):
            sock = raw_socket(runner.address)
            assert hello(sock)["type"] == "welcome"
            send(sock, {"type": "get_config"})
            assert receive(sock)["type"] == "config"
            sock.close()
        assert runner.server_stats()["unauthenticated"] <= MAX_UNAUTHENTICATED
        still_serving(runner, players, learner)
    finally:
        stop.set()
        attacker.join(timeout=30)
    assert runner.server_stats()["evicted_handshakes"] > 0
