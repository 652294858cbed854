"""Train PPO on CartPole entirely from external simulator processes.

    python examples/external_cartpole/train_server.py --launch-clients 4 [--inference local]

or start the server alone and the clients anywhere else:

    export LIGHTNING_RL_EXTERNAL_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    python examples/external_cartpole/train_server.py --port 9900 &
    python examples/external_cartpole/client.py --address 127.0.0.1:9900 --seed 1 &
    python examples/external_cartpole/plain_client.py --address 127.0.0.1:9900 --episodes 1000 &

The config still names CartPole-v1: its spaces build the networks and the deterministic
evaluation (every 4 iterations, 20 episodes) runs on a local copy; every training step comes
from the clients. Training stops once the evaluation mean reaches 450.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from lightning_rl.algorithms.ppo import PPOConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (see the address file)")
    parser.add_argument("--address-file", default=None)
    parser.add_argument("--launch-clients", type=int, default=0, help="start this many client.py processes")
    parser.add_argument("--inference", choices=["remote", "local"], default="remote")
    parser.add_argument(
        "--batch-mode", choices=["truncate_episodes", "complete_episodes"], default="truncate_episodes"
    )
    parser.add_argument("--max-iterations", type=int, default=300)
    parser.add_argument("--target", type=float, default=450.0)
    args = parser.parse_args()

    token = os.environ.setdefault("LIGHTNING_RL_EXTERNAL_TOKEN", secrets.token_urlsafe(32))
    address_file = args.address_file or str(Path(tempfile.mkdtemp()) / "server.json")
    clients = max(1, args.launch_clients)
    config = (
        PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
        .environment(
            "CartPole-v1",
            external={
                "host": args.host,
                "port": args.port,
                "address_file": address_file,
                "batch_mode": args.batch_mode,
            },
        )
        # 256 steps per iteration, whatever the number of clients.
        .env_runners(num_envs_per_env_runner=clients, rollout_fragment_length=max(1, 256 // clients))
        .training(train_batch_size=256, minibatch_size=256, num_epochs=20, lr=1e-3, gamma=0.98, lambda_=0.8)
        .evaluation(evaluation_interval=4, evaluation_duration=20)
        .debugging(seed=0)
    )
    run = config.build_algo()
    print(f"policy server address file: {address_file} (token in $LIGHTNING_RL_EXTERNAL_TOKEN)", flush=True)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "client.py"),
                "--address-file",
                address_file,
                "--inference",
                args.inference,
                "--seed",
                str(seed),
            ],
            env={**os.environ, "LIGHTNING_RL_EXTERNAL_TOKEN": token},
        )
        for seed in range(args.launch_clients)
    ]
    try:
        for _ in range(args.max_iterations):
            result = run.train()
            evaluation = result.get("evaluation", {}).get("episode_return_mean")
            steps = result["num_env_steps_sampled_lifetime"]
            client_return = result["env_runners"].get("episode_return_mean", float("nan"))
            print(
                f"iteration {result['training_iteration']:4d}  env steps {steps:7d}  "
                f"client return {client_return:7.1f}  "
                f"evaluation {evaluation if evaluation is not None else '-'}",
                flush=True,
            )
            if evaluation is not None and evaluation >= args.target:
                print(f"reached {evaluation:.1f} >= {args.target}")
                break
    finally:
        run.stop()  # the clients see server_closing and exit
        for process in processes:
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
