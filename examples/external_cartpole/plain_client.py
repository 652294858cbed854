"""A CartPole simulator speaking the policy-server protocol with plain sockets.

    LIGHTNING_RL_EXTERNAL_TOKEN=... python examples/external_cartpole/plain_client.py \
        --address 127.0.0.1:9900 [--encoding json] [--inference local] [--episodes 20]

Written from docs/external_env_protocol.md alone, without the lightning-rl client library (it
does not import lightning_rl at all): frames are a 4-byte big-endian length, one encoding byte
(1 JSON, 2 msgpack) and the body. ``--inference remote`` asks for every action;
``--inference local`` downloads the ONNX model, samples with its own noise and uploads whole
episodes, fetching a new model whenever the server's weights version moves.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct

import gymnasium as gym
import msgpack
import numpy as np

JSON, MSGPACK = 1, 2


class Connection:
    def __init__(self, host: str, port: int, encoding: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.encoding = encoding

    def request(self, message: dict, encoding: int | None = None) -> dict:
        encoding = encoding or self.encoding
        if encoding == JSON:
            body = json.dumps(message).encode("utf-8")
        else:
            body = msgpack.packb(message, use_bin_type=True)
        self.sock.sendall(struct.pack(">IB", len(body), encoding) + body)
        length, reply_encoding = struct.unpack(">IB", self._read(5))
        body = self._read(length)
        reply = json.loads(body) if reply_encoding == JSON else msgpack.unpackb(body, raw=False)
        if reply["type"] == "error":
            raise SystemExit(f"server error {reply['code']}: {reply['message']}")
        return reply

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("the server closed the connection")
            data += chunk
        return data


def play_remote(conn: Connection, env: gym.Env, episodes: int, seed: int) -> list[float]:
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        episode_id = conn.request({"type": "start_episode"})["episode_id"]
        total, reward, done = 0.0, 0.0, False
        while not done:
            # The reward of the previous action travels with the next observation.
            reply = conn.request(
                {
                    "type": "get_action",
                    "episode_id": episode_id,
                    "observation": obs.tolist(),
                    "reward": reward,
                }
            )
            obs, reward, terminated, truncated, _ = env.step(reply["action"])
            total += reward
            done = terminated or truncated
        conn.request(
            {
                "type": "end_episode",
                "episode_id": episode_id,
                "observation": obs.tolist(),
                "reward": reward,
                "terminated": bool(terminated),
                "truncated": bool(truncated),
            }
        )
        returns.append(total)
        obs, _ = env.reset()
    return returns


class LocalModel:
    """The server's ONNX policy: obs [B, 4] and noise [B, K] in; action, module_action, log-prob out."""

    def __init__(self, conn: Connection) -> None:
        import onnxruntime

        reply = conn.request({"type": "get_model", "format": "onnx"}, encoding=MSGPACK)
        self.version = reply["weights_version"]
        self.noise_width = reply["metadata"]["noise"]["shape"][1]
        assert reply["metadata"]["noise"]["distribution"] == "uniform"  # Discrete actions
        self.session = onnxruntime.InferenceSession(reply["data"], providers=["CPUExecutionProvider"])

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[int, int, float]:
        noise = rng.uniform(1e-6, 1 - 1e-6, size=(1, self.noise_width)).astype(np.float32)
        action, module_action, log_prob = self.session.run(
            None, {"obs": obs[None].astype(np.float32), "noise": noise}
        )
        return int(action[0]), int(module_action[0]), float(log_prob[0])


def play_local(conn: Connection, env: gym.Env, episodes: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    model = LocalModel(conn)
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        observations, actions, module_actions, log_probs, rewards = [obs.tolist()], [], [], [], []
        done = False
        while not done:
            action, module_action, log_prob = model(obs, rng)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs.tolist())
            actions.append(action)
            module_actions.append(module_action)
            log_probs.append(log_prob)
            rewards.append(float(reward))
            done = terminated or truncated
        episode = {
            "observations": observations,
            "actions": actions,
            "module_actions": module_actions,
            "action_log_probs": log_probs,
            "rewards": rewards,
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        }
        reply = conn.request({"type": "upload_episodes", "episodes": [episode]})
        if reply["weights_version"] != model.version:
            model = LocalModel(conn)
        returns.append(sum(rewards))
        obs, _ = env.reset()
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", required=True, help="host:port")
    parser.add_argument("--token", default=os.environ.get("LIGHTNING_RL_EXTERNAL_TOKEN"))
    parser.add_argument("--encoding", choices=["json", "msgpack"], default="msgpack")
    parser.add_argument("--inference", choices=["remote", "local"], default="remote")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    host, port = args.address.rsplit(":", 1)
    conn = Connection(host, int(port), JSON if args.encoding == "json" else MSGPACK)
    welcome = conn.request({"type": "hello", "protocol_version": 1, "token": args.token})
    config = conn.request({"type": "get_config"})
    assert config["observation_space"]["shape"] == [4] and config["action_space"]["n"] == 2, config
    env = gym.make("CartPole-v1")
    play = play_local if args.inference == "local" else play_remote
    returns = play(conn, env, args.episodes, args.seed)
    print(
        json.dumps(
            {
                "session": welcome["session_id"],
                "episodes": len(returns),
                "steps": int(sum(returns)),
                "mean_return": sum(returns) / len(returns),
            }
        )
    )


if __name__ == "__main__":
    main()
