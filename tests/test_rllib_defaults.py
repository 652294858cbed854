"""The fluent configs start from RLlib's defaults (issue 19 item 5), read from RLlib's own
source as installed with ``ray``; the algorithms' constructors keep lightning-rl's tuned ones."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from lightning_rl import DefaultModelConfig
from lightning_rl.algorithms.appo import APPOConfig
from lightning_rl.algorithms.bc import BCConfig
from lightning_rl.algorithms.cql import CQLConfig
from lightning_rl.algorithms.dqn import DQNConfig
from lightning_rl.algorithms.dreamerv3 import DreamerV3Config
from lightning_rl.algorithms.impala import IMPALAConfig
from lightning_rl.algorithms.marwil import MARWILConfig
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.algorithms.sac import SACConfig
from lightning_rl.config import rllib_defaults
from lightning_rl.config.algorithm_config import algorithm_parameters
from lightning_rl.errors import ConfigError

RLLIB = Path(importlib.util.find_spec("ray").submodule_search_locations[0]) / "rllib"

# (our config, RLlib's config classes from the most derived up: file, class name)
CONFIGS = {
    "PPO": (PPOConfig, [("algorithms/ppo/ppo.py", "PPOConfig")]),
    "APPO": (
        APPOConfig,
        [("algorithms/appo/appo.py", "APPOConfig"), ("algorithms/impala/impala.py", "IMPALAConfig")],
    ),
    "IMPALA": (IMPALAConfig, [("algorithms/impala/impala.py", "IMPALAConfig")]),
    "DQN": (DQNConfig, [("algorithms/dqn/dqn.py", "DQNConfig")]),
    "SAC": (SACConfig, [("algorithms/sac/sac.py", "SACConfig")]),
    "CQL": (CQLConfig, [("algorithms/cql/cql.py", "CQLConfig"), ("algorithms/sac/sac.py", "SACConfig")]),
    "MARWIL": (MARWILConfig, [("algorithms/marwil/marwil.py", "MARWILConfig")]),
    "BC": (BCConfig, [("algorithms/bc/bc.py", "BCConfig"), ("algorithms/marwil/marwil.py", "MARWILConfig")]),
    "DreamerV3": (DreamerV3Config, [("algorithms/dreamerv3/dreamerv3.py", "DreamerV3Config")]),
}
# Our name -> RLlib's attribute name, where they differ.
RLLIB_NAMES = {
    "evaluation_explore": "explore",
    "max_consecutive_env_runner_failures": "num_consecutive_env_runner_failures_tolerance",
    "input_shuffle_buffer_size": "shuffle_buffer_size",
}


def _value(node: ast.expr) -> Any:
    """A literal, or ``int(<literal>)`` (RLlib writes ``int(1e6)``); else a marker."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "int" and len(node.args) == 1:
        return int(_value(node.args[0]))
    if isinstance(node, ast.Dict):
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}
    try:
        return ast.literal_eval(node)
    except ValueError:
        return "<not a literal>"


def rllib_init_values(path: str, class_name: str) -> dict[str, Any]:
    """``self.<name> = <value>`` in ``class_name.__init__`` of RLlib's source (last one wins)."""
    tree = ast.parse((RLLIB / path).read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    values: dict[str, Any] = {}
    for node in ast.walk(init):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Attribute) and getattr(target.value, "id", None) == "self":
                values[target.attr] = _value(node.value)
    return values


def rllib_model_defaults() -> dict[str, Any]:
    tree = ast.parse((RLLIB / "core/rl_module/default_model_config.py").read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "DefaultModelConfig")
    values = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call):  # field(default_factory=lambda: [256, 256])
                factory = next((k.value for k in value.keywords if k.arg == "default_factory"), None)
                value = factory.body if isinstance(factory, ast.Lambda) else value
            values[node.target.id] = _value(value)
    return values


def rllib_values(algorithm: str) -> dict[str, Any]:
    values = rllib_init_values("algorithms/algorithm_config.py", "AlgorithmConfig")
    for path, class_name in reversed(CONFIGS[algorithm][1]):
        values.update(rllib_init_values(path, class_name))
    return values


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_every_value_in_the_table_is_rllibs_and_the_config_starts_from_it(algorithm):
    config_class, _ = CONFIGS[algorithm]
    config = config_class()
    rllib = rllib_values(algorithm)
    table = rllib_defaults.rllib_defaults(
        config_class.algo_class, set(algorithm_parameters(config_class.algo_class))
    )
    model = rllib_model_defaults()
    assert table, algorithm
    for name, value in table.items():
        if name == "model_config":
            for key, model_value in value.items():
                assert model[key] == model_value, (algorithm, key)
        else:
            assert rllib[RLLIB_NAMES.get(name, name)] == value, (algorithm, name)
        assert getattr(config, name) == value, (algorithm, name)
    # Every setting RLlib sets to a literal and we name alike equals RLlib's, or is a documented
    # exception (docs/rllib-migration.md, "Defaults that stay different").
    exceptions = STAYS_DIFFERENT.get(algorithm, set()) | STAYS_DIFFERENT["all"]
    for name in algorithm_parameters(config_class.algo_class):
        rllib_name = RLLIB_NAMES.get(name, name)
        if name in exceptions or rllib_name not in rllib or rllib[rllib_name] == "<not a literal>":
            continue
        ours = getattr(config, name)
        expected = rllib[rllib_name]
        if isinstance(expected, tuple | list) and isinstance(ours, tuple | list):
            ours, expected = (
                [list(x) if isinstance(x, tuple) else x for x in ours],
                [list(x) if isinstance(x, tuple) else x for x in expected],
            )
        assert ours == expected or (ours is None and name in NONE_MEANS_RLLIBS), (
            algorithm,
            name,
            ours,
            expected,
        )


# Settings whose lightning-rl value stays different in the fluent configs, with the reason in
# docs/rllib-migration.md ("Defaults that stay different").
STAYS_DIFFERENT = {
    "all": {
        "callbacks",  # RLlib: a method; here the setting holding config.callbacks(...)
        "policies",
        "policy_mapping_fn",
        "num_cpus_per_learner",  # RLlib "auto"; here 1 torch thread (measured faster on 2 cores)
        "custom_resources_per_env_runner",  # RLlib {}; here None, the same meaning
        "output_config",  # RLlib {}; here None, the same meaning
        "env_config",  # RLlib {}; here None, the same meaning
        "input_",  # RLlib "sampler" (= no offline input); here None, the same meaning
        "input_read_method",  # RLlib "read_parquet"; here "auto": our reader picks the format
        "dataset_num_iters_per_learner",  # RLlib None (one pass); here a fixed count (100)
        "input_shuffle_buffer_size",  # RLlib 0 (no shuffle); here it must be positive
        "rollout_fragment_length",  # RLlib 200 for offline algorithms (unused offline) / 1 DreamerV3
        "lr",  # SAC/DreamerV3: RLlib None (per-network rates); here the fallback 3e-4
        "train_batch_size",  # DreamerV3: RLlib None, derived from batch_size_B x batch_length_T here
        "model_config",  # compared key by key above
        "rl_module_spec",
        "evaluation_interval",
    },
}
# Settings where our None means exactly RLlib's value (DQN's epsilon schedule and replay buffer,
# DreamerV3's episode replay of 1e6 steps).
NONE_MEANS_RLLIBS = {"epsilon", "replay_buffer_config"}


def test_ppo_defaults_are_rllibs_the_native_constructor_keeps_its_own():
    config = PPOConfig()
    rllib = {
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
        "evaluation_explore": True,
    }
    assert {name: getattr(config, name) for name in rllib} == rllib
    native = PPOConfig(defaults="native")
    assert native.lr == PPO.__init__.__kwdefaults__["lr"] == 3e-4
    assert native.num_epochs == 10 and native.evaluation_explore is False and native.model_config is None
    assert PPOConfig.__init__.__kwdefaults__ == {"defaults": "rllib"}
    with pytest.raises(ConfigError, match="defaults must be one of"):
        PPOConfig(defaults="tuned")


def test_bc_beta_is_zero_as_in_rllib():
    assert BCConfig().beta == 0.0  # was 1.0: MARWIL's default shown through BC's **kwargs
    assert BCConfig(defaults="native").beta == 0.0  # BC declares it now
    assert BCConfig().vf_coeff == 1.0 and BCConfig(defaults="native").vf_coeff == 0.0


def test_model_config_is_filled_from_rllibs_default_model_config():
    assert PPOConfig().model_config["fcnet_hiddens"] == [256, 256]
    config = PPOConfig().rl_module(model_config={"fcnet_hiddens": [32], "vf_share_layers": True})
    assert config.model_config == {
        "fcnet_hiddens": [32],
        "vf_share_layers": True,
        "free_log_std": False,
        "lstm_cell_size": 256,
        "max_seq_len": 20,
    }
    # IMPALA shares the encoder as RLlib's DefaultModelConfig does (PPO and APPO do not).
    assert IMPALAConfig().model_config["vf_share_layers"] is True
    assert "vf_share_layers" not in APPOConfig().model_config
    # A DefaultModelConfig object is complete already: taken as it is.
    given = DefaultModelConfig(fcnet_hiddens=[64, 64])
    assert PPOConfig().rl_module(model_config=given).model_config is given
    assert PPOConfig(defaults="native").rl_module(model_config={"fcnet_hiddens": [8]}).model_config == {
        "fcnet_hiddens": [8]
    }


def test_one_iteration_with_rllibs_ppo_defaults(tmp_path):
    """RLlib's PPO settings (KL loss, value clipping, no gradient clipping, shared-nothing
    [256, 256] networks) train; only the sizes are small here."""
    algo = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .training(train_batch_size=256, minibatch_size=128, num_epochs=2)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        result = algo.train()
    finally:
        algo.stop()
    learner = result["learners"]["default_policy"]
    assert result["num_env_steps_sampled_lifetime"] == 256
    assert {"policy_loss", "vf_loss", "mean_kl_loss"} <= set(learner) or "kl" in " ".join(learner)
