"""The protocol doc is enough: a plain-socket client (no lightning-rl import) trains with the server."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.errors import EnvError
from tests.external_helpers import TOKEN

REPO = Path(__file__).resolve().parents[1]
PLAIN_CLIENT = REPO / "examples" / "external_cartpole" / "plain_client.py"
DOC = REPO / "docs" / "external_env_protocol.md"


def test_the_plain_client_imports_nothing_from_lightning_rl():
    tree = ast.parse(PLAIN_CLIENT.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name and name.startswith("lightning_rl")}
    assert imported >= {"socket", "struct", "json", "msgpack"}


@pytest.mark.parametrize(("encoding", "inference"), [("json", "remote"), ("msgpack", "local")])
def test_the_plain_client_plays_through_the_server(encoding, inference):
    algo = PPO(
        "CartPole-v1",
        external={"token": TOKEN, "sample_timeout_s": 1.0},
        train_batch_size=64,
        minibatch_size=64,
    )
    spec = algo.env_runner_spec(num_envs=1)
    runner = spec.runner_class()(spec)
    try:
        process = subprocess.Popen(
            [
                *(sys.executable, str(PLAIN_CLIENT), "--address", f"{runner.host}:{runner.port}"),
                *("--token", TOKEN, "--encoding", encoding, "--inference", inference, "--episodes", "6"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        delivered, returns = 0, []
        while process.poll() is None:
            try:
                result = runner.sample(16, True, algo.policy_state())
            except EnvError:  # fewer than 16 steps within a second: the client may be done
                continue
            delivered += result.stats.num_env_steps
            returns += result.stats.returns
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["episodes"] == 6
        stats = runner.server_stats()
        assert stats["errors"] == {} and stats["lost_episodes"] == 0
        finished = stats["episodes_uploaded"] if inference == "local" else stats["episodes_finished"]
        assert finished == 6
        leftover = stats["buffered_steps"]
        assert delivered + leftover == report["steps"], (
            "every step of the finished episodes reaches the learner"
        )
    finally:
        runner.stop()


def test_the_doc_lists_every_message_and_error_code():
    from lightning_rl.envs.external import protocol as proto

    text = DOC.read_text()
    for name in proto.REQUEST_TYPES:
        assert f"### `{name}`" in text, name
    error_codes = [
        proto.BAD_FRAME,
        proto.FRAME_TOO_LARGE,
        proto.HANDSHAKE_REQUIRED,
        proto.UNAUTHORIZED,
        proto.UNSUPPORTED_VERSION,
        proto.UNKNOWN_MESSAGE_TYPE,
        proto.BAD_REQUEST,
        proto.UNKNOWN_EPISODE,
        proto.TIMEOUT,
        proto.TOO_MANY_CLIENTS,
        proto.SERVER_ERROR,
        proto.SERVER_CLOSING,
    ]
    for code in error_codes:
        assert f"| `{code}` |" in text, code
