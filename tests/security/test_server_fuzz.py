"""A seeded, bounded fuzzed protocol corpus against a live server next to good clients (issue 18).

2,500 frames, mutated from every message type (wrong types, absurd numbers, packed arrays with
impossible shapes, lone surrogates, corrupted bytes, unknown fields, frames before ``hello``),
are sent over loopback while three good clients play and a learner samples. Every answer must be
a normal reply or an error code other than ``server_error``; the good clients never notice, the
learner sees only finite values, and every step the good clients sent reaches it.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import struct
from typing import Any

import msgpack
import numpy as np

from lightning_rl.envs.external import protocol as proto
from tests.external_helpers import (
    TOKEN,
    Learner,
    LegitPlayer,
    hello,
    make_algo,
    make_runner,
    raw_socket,
    receive,
    wait_for,
)

SEED = 18
NUM_FRAMES = 2500
GOOD = (101, 102, 103)


def weird_values(rng: random.Random) -> list[Any]:
    return [
        None,
        True,
        -1,
        0,
        2**63,
        10**401,
        1e39,
        -1e39,
        float("nan"),
        float("inf"),
        "",
        "\ud800",
        "x" * rng.randint(1, 3000),
        [],
        {},
        [[[]]],
        [1, [2, [3]]],
        {"dtype": "float32", "shape": [0, 2**62], "data": b""},
        {"dtype": "float32", "shape": [-1], "data": b""},
        {"dtype": "float32", "shape": [3], "data": b"\0" * 11},
        {"dtype": "complex64", "shape": [3], "data": b"\0" * 24},
        {"dtype": "float64", "shape": [3], "data": np.array([1e39, 0, 0], "<f8").tobytes()},
        {"dtype": "uint8", "shape": [2**31, 0], "data": b""},
        {"dtype": "float32", "shape": [True, 3], "data": b"\0" * 12},
        {"dtype": "float32", "shape": [3], "data": "not base64!"},
        b"\xff" * rng.randint(0, 64),
        [rng.uniform(-1e40, 1e40) for _ in range(3)],
        [-1.5, 0.0, float(rng.randint(0, 9))],
        rng.randint(-(2**70), 2**70),
        rng.random(),
    ]


def observation(rng: random.Random) -> list[float]:
    return [-1.0 - rng.random(), 0.0, float(rng.randint(0, 9))]  # never a good client's id


def templates(rng: random.Random) -> list[dict[str, Any]]:
    obs = observation(rng)
    episode = {
        "observations": [observation(rng) for _ in range(3)],
        "actions": [rng.randint(0, 1), rng.randint(0, 1)],
        "action_log_probs": [-0.7, -0.7],
        "rewards": [1.0, 1.0],
        "terminated": True,
    }
    return [
        {"type": "hello", "protocol_version": 1, "token": TOKEN},
        {"type": "get_config"},
        {"type": "start_episode", "episode_id": "f", "training_enabled": True, "explore": True},
        {"type": "get_action", "episode_id": "f", "observation": obs, "reward": 1.0},
        {"type": "log_returns", "episode_id": "f", "reward": 1.0},
        {"type": "end_episode", "episode_id": "f", "observation": obs, "reward": 1.0, "terminated": True},
        {"type": "get_weights"},
        {"type": "upload_episodes", "training_enabled": True, "episodes": [episode]},
        {"type": "ping"},
        {"type": "no_such_type"},
    ]


def mutate(message: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    message = json.loads(json.dumps(message))  # a deep copy of plain data
    choice = rng.random()
    keys = [k for k in message if k != "type"]
    if choice < 0.55 and keys:  # a field gets a weird value
        message[rng.choice(keys)] = rng.choice(weird_values(rng))
    elif choice < 0.65 and keys:  # a field is missing
        del message[rng.choice(keys)]
    elif choice < 0.72:  # an unknown field
        message[rng.choice(["extra", "__class__", "\ud800"])] = rng.choice(weird_values(rng))
    elif choice < 0.8:  # the type itself is odd
        message["type"] = rng.choice([None, 1, "", "HELLO", "get_action ", ["ping"]])
    elif choice < 0.9 and message["type"] == "upload_episodes":  # inside the episode
        episode = message["episodes"][0]
        episode[rng.choice(list(episode))] = rng.choice(weird_values(rng))
    return message


def encode(message: dict[str, Any], rng: random.Random) -> bytes:
    """msgpack or JSON body; JSON where msgpack cannot carry a value (huge ints, surrogates)."""
    if rng.random() < 0.5:
        try:
            return _frame(msgpack.packb(message), proto.MSGPACK)
        except (OverflowError, UnicodeEncodeError, TypeError, ValueError):
            pass
    body = json.dumps(message, default=lambda b: base64.b64encode(b).decode()).encode(
        "utf-8", "surrogatepass"
    )
    return _frame(body, proto.JSON)


def _frame(body: bytes, encoding: int) -> bytes:
    return struct.pack(">IB", len(body), encoding) + body


def corrupt(frame: bytes, rng: random.Random) -> bytes:
    """Flip, drop or insert bytes of the body; the header length is kept true to the body."""
    body = bytearray(frame[proto.HEADER_SIZE :])
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        position = rng.randrange(len(body) + 1)
        if op < 0.5 and body:
            body[min(position, len(body) - 1)] = rng.randrange(256)
        elif op < 0.75 and body:
            del body[min(position, len(body) - 1)]
        else:
            body[position:position] = bytes([rng.randrange(256)])
    encoding = frame[4] if rng.random() < 0.9 else rng.randrange(256)
    return struct.pack(">IB", len(body), encoding) + bytes(body)


class Fuzzer:
    """Sends the corpus; one authenticated connection at a time, a new one after each error."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.codes: dict[str, int] = {}
        self.replies = 0

    def connect(self, authenticate: bool) -> None:
        self.close()
        self.sock = raw_socket(self.address, timeout=30)
        if authenticate:
            assert hello(self.sock, encoding=proto.MSGPACK)["type"] == "welcome"
            self.sock.sendall(proto.encode_frame({"type": "start_episode", "episode_id": "f"}))
            assert receive(self.sock)["type"] == "episode_started"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, frame: bytes, pre_auth: bool) -> None:
        if pre_auth or self.sock is None:
            self.connect(authenticate=not pre_auth)
        try:
            self.sock.sendall(frame)
            reply = receive(self.sock)
        except OSError:
            reply = None
        if reply is None or reply.get("type") == "error":
            code = "closed" if reply is None else reply["code"]
            self.codes[code] = self.codes.get(code, 0) + 1
            assert code != proto.SERVER_ERROR, (frame[:200], reply)
            self.close()
        else:
            self.replies += 1


def corpus(rng: random.Random) -> list[tuple[bytes, bool]]:
    """(frame, send it before hello?) pairs; the known edge cases first, then seeded mutations."""
    frames: list[tuple[bytes, bool]] = [
        (_frame(b'{"type":"hello","protocol_version":1,"token":"\\ud800"}', proto.JSON), True),
        (_frame(b'{"type":"log_returns","episode_id":"f","reward":' + b"9" * 401 + b"}", proto.JSON), False),
        (
            _frame(
                b'{"type":"get_action","episode_id":"f","observation":'
                b'{"dtype":"float32","shape":[0,4611686018427387904],"data":""}}',
                proto.JSON,
            ),
            False,
        ),
    ]
    while len(frames) < NUM_FRAMES:
        pre_auth = rng.random() < 0.15
        base = rng.choice(templates(rng)[:1] if pre_auth and rng.random() < 0.7 else templates(rng))
        frame = encode(mutate(base, rng) if rng.random() < 0.8 else base, rng)
        if rng.random() < 0.2:
            frame = corrupt(frame, rng)
        frames.append((frame, pre_auth))
    return frames


def test_fuzzed_frames_never_hurt_the_server_the_learner_or_good_clients():
    algo = make_algo(
        external={
            "timeout_s": 2.0,
            "handshake_timeout_s": 2.0,
            "max_clients": 64,
            "sample_timeout_s": 5.0,
        }
    )
    runner = make_runner(algo)
    players = [LegitPlayer(runner.address, i) for i in GOOD]
    learner = Learner(algo, runner)
    fuzzer = Fuzzer(runner.address)
    try:
        for player in players:
            player.start()
        learner.start()
        for frame, pre_auth in corpus(random.Random(SEED)):
            fuzzer.send(frame, pre_auth)
        fuzzer.close()
        assert fuzzer.replies > 100 and sum(fuzzer.codes.values()) > 500, (fuzzer.replies, fuzzer.codes)
        for player in players:
            player.stop()  # each finishes its episode: everything it sent must reach the learner
            assert player.error is None, player.error
        # One more client whose steps come through the learner after everything buffered before.
        flush = LegitPlayer(runner.address, 200, max_episodes=4)
        flush.start()
        assert wait_for(lambda: learner.received(200) > 0, 60)
        flush.stop()
        sent = {p.env.client_id: p.steps_sent for p in players}
        received = {p.env.client_id: learner.received(int(p.env.client_id)) for p in players}
        assert sent == received and all(s > 0 for s in sent.values()), (sent, received)
        stats = runner.server_stats()
        assert stats["errors"].get(proto.SERVER_ERROR, 0) == 0, stats
        assert learner.error is None and learner.non_finite == 0
    finally:
        fuzzer.close()
        for player in players:
            player.stop_event.set()
        learner.stop_event.set()
        runner.stop()
        learner.stop()
        for player in players:
            player.join(timeout=30)
