"""Time and env steps for APPO to solve CartPole-v1 with the default config.

    python benchmarks/appo_cartpole.py --seed 0 [--num-env-runners R]

Trains ``configs/appo/cartpole.yaml`` until both criteria hold or a step cap: the
deterministic evaluation mean over 20 episodes reaches 475, and the mean of the last 100
training episodes reaches 450. The last line is one JSON object with the keys of
``ppo_cartpole.py`` plus ``mean_policy_lag`` and ``learner_updates``.
"""

from _async_cartpole import main

if __name__ == "__main__":
    main("APPO", __doc__)
