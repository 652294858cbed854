"""Port of RLlib's ``examples/multi_agent/multi_agent_cartpole.py``: two agents, two policies.

RLlib's target: ``env_runners/episode_return_mean`` (the sum over both agents) 600 within 200
iterations / 100k env steps. Changed: imports (``MultiAgentCartPole`` and ``register_env`` from
lightning_rl), RLlib's script helpers replaced by a plain ``algo.train()`` loop (``_loop.py``).

    python examples/rllib_ports/multi_agent_cartpole.py [--num-agents 2]
"""

from __future__ import annotations

from _loop import example_args, train_until

from lightning_rl import PPOConfig, register_env
from lightning_rl.envs.classes import MultiAgentCartPole


def main(argv=None) -> dict:
    args = example_args(
        default_iters=200,
        default_timesteps=100000,
        default_reward=600.0,
        argv=argv,
        extra=lambda p: p.add_argument("--num-agents", type=int, default=2),
    )
    if args.num_agents > 0:
        register_env("env", lambda _: MultiAgentCartPole(config={"num_agents": args.num_agents}))

    base_config = (
        PPOConfig()
        .environment("env" if args.num_agents > 0 else "CartPole-v1")
        .env_runners(num_envs_per_env_runner=20)
    )
    if args.num_agents > 0:
        base_config.multi_agent(
            policies={f"p{i}" for i in range(args.num_agents)},
            policy_mapping_fn=lambda aid, *a, **kw: f"p{aid}",
        )
    return train_until(base_config, "multi_agent_cartpole", args)


if __name__ == "__main__":
    main()
