"""RLlib's defaults, where they differ from the algorithms' own, for the fluent configs.

A fluent config (``PPOConfig()``) is what someone porting RLlib code reads, so it starts from
RLlib's values: a tuned RLlib example that overrides only some settings then learns as it did
in RLlib. The algorithms' constructors (``PPO(...)``, ``lightning-rl fit --model ppo``) and the
YAML files under ``configs/`` keep lightning-rl's own tuned defaults (small networks, in-process
sampling, values tuned on 2 CPU cores); ``PPOConfig(defaults="native")`` starts a fluent config
from those instead.

Read from RLlib 2.60.0's source (``ray/rllib/algorithms/algorithm_config.py`` and each
``<algo>/<algo>.py`` config ``__init__``; new API stack). Only values that differ are listed;
settings whose RLlib default is ``None`` meaning "derived" (SAC's and DreamerV3's ``lr``,
DreamerV3's ``train_batch_size``) are left to the algorithm, and so are the offline reader's
``input_shuffle_buffer_size`` (RLlib's ``shuffle_buffer_size=0``, no local shuffle; the offline
algorithms here require a positive buffer) and ``dataset_num_iters_per_learner`` (RLlib's None,
one pass per iteration; here a positive count). The table is keyed by the
algorithm class's name and looked up along its MRO, so a subclass of ``PPO`` gets PPO's row;
the config layer imports no algorithm for it. docs/rllib-migration.md lists every row and the
settings that stay different, with the reason.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULTS_CHOICES = ("rllib", "native")

#: Every algorithm: RLlib's ``AlgorithmConfig`` values that differ from ``Algorithm.__init__``'s.
COMMON: dict[str, Any] = {
    # RLlib's evaluation_config inherits explore=True: evaluation samples actions.
    "evaluation_explore": True,
    "restart_failed_sub_environments": False,
    # num_consecutive_env_runner_failures_tolerance in RLlib.
    "max_consecutive_env_runner_failures": 100,
    "placement_strategy": "PACK",
}

#: RLlib's ``DefaultModelConfig`` values that differ from ``lightning_rl.DefaultModelConfig``'s.
MODEL_CONFIG: dict[str, Any] = {
    "fcnet_hiddens": [256, 256],
    "free_log_std": False,
    "lstm_cell_size": 256,
    "max_seq_len": 20,
}

#: Per algorithm (class name): RLlib's algorithm config values that differ.
ALGORITHMS: dict[str, dict[str, Any]] = {
    "PPO": {
        "lr": 5e-5,
        "train_batch_size": 4000,
        "minibatch_size": 128,
        "num_epochs": 30,
        "lambda_": 1.0,
        "use_kl_loss": True,
        "vf_loss_coeff": 1.0,
        "clip_param": 0.3,
        "vf_clip_param": 10.0,
        "grad_clip": None,
        "num_env_runners": 2,
    },
    "APPO": {
        "target_network_update_freq": 2,
        "circular_buffer_num_batches": 8,
        "max_requests_in_flight_per_env_runner": 1,
        "num_env_runners": 2,
    },
    "IMPALA": {
        "max_requests_in_flight_per_env_runner": 1,
        "num_env_runners": 2,
        # RLlib's DefaultModelConfig shares the encoder (PPO and APPO set it False).
        "model_config": {"vf_share_layers": True},
    },
    "DQN": {},
    "SAC": {
        "actor_lr": 3e-5,
        "critic_lr": 3e-4,
        "alpha_lr": 3e-4,
        "replay_buffer_config": {
            "type": "PrioritizedEpisodeReplayBuffer",
            "capacity": 1_000_000,
            "alpha": 0.6,
            "beta": 0.4,
        },
    },
    "CQL": {
        "critic_lr": 1e-3,
        "alpha_lr": 1e-3,
    },
    "MARWIL": {
        "train_batch_size": 2000,
    },
    "BC": {
        "beta": 0.0,
        "vf_coeff": 1.0,
        "train_batch_size": 2000,
    },
    # RLlib's rollout_fragment_length=1 lives inside an iteration that samples and updates
    # until its minimum time/steps are met; here "auto" gives the same sample/update ratio in
    # one round (one iteration), so it is not copied.
    "DreamerV3": {
        "metrics_num_episodes_for_smoothing": 1,
    },
}


def rllib_defaults(algo_class: type, accepted: set[str] | frozenset[str]) -> dict[str, Any]:
    """RLlib's differing defaults for ``algo_class`` (its own row, else its nearest base
    class's), limited to the settings it ``accepted``; ``model_config`` is a full dict of
    RLlib's model values on top of which a user's dict goes."""
    row: dict[str, Any] = {}
    for cls in algo_class.__mro__:
        if cls.__name__ in ALGORITHMS:
            row = ALGORITHMS[cls.__name__]
            break
    values = {**COMMON, **{k: v for k, v in row.items() if k != "model_config"}}
    values["model_config"] = {**MODEL_CONFIG, **row.get("model_config", {})}
    return {key: copy.deepcopy(value) for key, value in values.items() if key in accepted}
