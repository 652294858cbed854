"""RLlib's ``DefaultModelConfig`` initialiser keys (``fcnet_*``, ``head_fcnet_*``, ``conv_*``
``_kernel_initializer`` / ``_bias_initializer`` and their ``_kwargs``): they take effect on the
layers RLlib applies them to, names and ``torch.nn.init`` functions both work and are stored as
names, anything else is one ConfigError, checkpoints keep them, and a config that names none
builds bit-identical networks."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl import DefaultModelConfig
from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.errors import CheckpointError, ConfigError
from lightning_rl.modules.encoders import build_encoder
from lightning_rl.modules.initializers import ALL_INITIALIZER_KEYS
from lightning_rl.modules.model_config import resolve_model_config
from lightning_rl.modules.policy_networks import PolicyNet, ValueNet
from lightning_rl.modules.ppo_rl_module import DefaultPPOTorchRLModule
from lightning_rl.modules.q_networks import QNetwork
from lightning_rl.modules.rl_module import RLModuleSpec
from lightning_rl.modules.sac_networks import ContinuousQEnsemble, SquashedGaussianActor
from lightning_rl.training_run import TrainingRun

BOX = spaces.Box(-1.0, 1.0, (4,), np.float32)
DISCRETE = spaces.Discrete(3)
CONTINUOUS = spaces.Box(-2.0, 2.0, (2,), np.float32)


def _networks(model_config):
    """(encoder layers, head layers) of every default network kind, built from one config."""
    torch.manual_seed(0)
    policy = PolicyNet(BOX, DISCRETE, model_config)
    value = ValueNet(BOX, model_config)
    q_net = QNetwork(BOX, DISCRETE, model_config, dueling=True)
    actor = SquashedGaussianActor(BOX, CONTINUOUS, model_config)
    critics = ContinuousQEnsemble(BOX, CONTINUOUS, model_config)
    module = DefaultPPOTorchRLModule(
        observation_space=BOX, action_space=DISCRETE, model_config=dict(model_config or {})
    )

    def linears(*parts):
        return [m for part in parts for m in part.modules() if isinstance(m, nn.Linear)]

    encoders = linears(policy.encoder, value.encoder, q_net.encoder, actor.encoder, module.encoder)
    heads = linears(policy.head_hiddens, policy.head, value.head, q_net.advantage, q_net.value, actor.head)
    heads += linears(module.pi, module.vf)
    n_encoder = len(resolve_model_config(model_config).fcnet_hiddens)
    for member in range(critics.net.num_members):  # the critics' first layers are their encoder
        layers = linears(critics.net.member(member))
        encoders += layers[:n_encoder]
        heads += layers[n_encoder:]
    return encoders, heads


def _state(model_config):
    encoders, heads = _networks(model_config)
    return [p.detach().clone() for layer in encoders + heads for p in layer.parameters()]


def test_a_config_that_names_no_initializer_builds_the_same_networks_as_before():
    # Explicit None everywhere is the default.
    explicit = {key: None for key in ALL_INITIALIZER_KEYS}
    for got, want in zip(_state(explicit), _state(None), strict=True):
        assert torch.equal(got, want)
    # And the default is the documented scheme, draw for draw: nn.Linear, then orthogonal
    # weights (gain sqrt(2) hidden, 0.01 policy output) and zero biases.
    torch.manual_seed(0)
    reference = []
    for fan_in, fan_out, gain in [(4, 64, math.sqrt(2.0)), (64, 64, math.sqrt(2.0)), (64, 3, 0.01)]:
        layer = nn.Linear(fan_in, fan_out)
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
        reference += [layer.weight, layer.bias]
    torch.manual_seed(0)
    policy = PolicyNet(BOX, DISCRETE, None)
    for got, want in zip(policy.parameters(), reference, strict=True):
        assert torch.equal(got, want)


def test_fcnet_initializers_reach_every_encoder_layer_and_head_ones_every_head_layer():
    config = {
        "fcnet_hiddens": [16, 8],
        "head_fcnet_hiddens": [8],
        "fcnet_bias_initializer": "constant_",
        "fcnet_bias_initializer_kwargs": {"val": 0.5},
        "fcnet_kernel_initializer": "orthogonal_",  # gain 1 (torch's default), not sqrt(2)
        "head_fcnet_bias_initializer": nn.init.constant_,
        "head_fcnet_bias_initializer_kwargs": {"val": -0.25},
    }
    encoders, heads = _networks(config)
    assert len(encoders) == 2 * 8 and len(heads) > 8  # 8 encoders of 2 layers (PPO module: 2, critics: 2)
    for layer in encoders:
        assert torch.equal(layer.bias, torch.full_like(layer.bias, 0.5))
        w = layer.weight.detach()
        small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # orthonormal rows or columns
        assert torch.allclose(small, torch.eye(small.shape[0]), atol=1e-5)
    for layer in heads:
        assert torch.equal(layer.bias, torch.full_like(layer.bias, -0.25))
    # Head weights were not named: the default scheme (orthogonal with the project's gains).
    policy_out = heads[1].weight.detach()  # PolicyNet's output layer, gain 0.01
    assert torch.allclose(policy_out @ policy_out.T, 1e-4 * torch.eye(3), atol=1e-8)


def test_head_kernel_kwargs_and_conv_initializers_take_effect():
    config = DefaultModelConfig(
        conv_filters=[[4, 3, 2]],
        fcnet_hiddens=[8],
        conv_kernel_initializer="constant_",
        conv_kernel_initializer_kwargs={"val": 0.125},
        conv_bias_initializer=nn.init.ones_,
        head_fcnet_kernel_initializer="xavier_uniform_",
        head_fcnet_kernel_initializer_kwargs={"gain": 0.0},  # a bound of 0: all zeros
    )
    encoder = build_encoder(spaces.Box(0, 255, (3, 10, 10), np.uint8), config)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1
    assert torch.equal(convs[0].weight, torch.full_like(convs[0].weight, 0.125))
    assert torch.equal(convs[0].bias, torch.ones_like(convs[0].bias))
    policy = PolicyNet(BOX, CONTINUOUS, config)
    assert torch.equal(policy.head.weight, torch.zeros_like(policy.head.weight))


SPELLINGS = [
    nn.init.xavier_uniform_,
    "xavier_uniform_",
    "Xavier_Uniform_",
    " xavier_uniform",
    nn.init.xavier_uniform,
]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=lambda s: getattr(s, "__name__", repr(s)))
def test_functions_and_names_are_accepted_and_stored_as_the_name(spelling):
    config = DefaultModelConfig(fcnet_kernel_initializer=spelling, conv_bias_initializer="zeros")
    assert config.fcnet_kernel_initializer == "xavier_uniform_"
    assert config.conv_bias_initializer == "zeros_"
    assert (
        resolve_model_config({"fcnet_kernel_initializer": spelling}).fcnet_kernel_initializer
        == "xavier_uniform_"
    )
    # Set after construction: checked (and named) when the config is used.
    late = DefaultModelConfig()
    late.head_fcnet_kernel_initializer = spelling
    assert resolve_model_config(late).head_fcnet_kernel_initializer == "xavier_uniform_"


def _my_init(tensor):
    return nn.init.zeros_(tensor)


HOSTILE = {
    "a lambda": {"fcnet_kernel_initializer": lambda t: t},
    "a function of another module": {"fcnet_kernel_initializer": _my_init},
    "os.system": {"fcnet_kernel_initializer": os.system},
    "an import path": {"conv_kernel_initializer": "os:system"},
    "not an initializer of nn.init": {"fcnet_kernel_initializer": "calculate_gain"},
    "a dunder": {"head_fcnet_bias_initializer": "__import__"},
    "a number": {"fcnet_bias_initializer": 3},
    "kwargs not a dict": {"fcnet_bias_initializer": "constant_", "fcnet_bias_initializer_kwargs": [0.5]},
    "an unknown kwarg": {
        "fcnet_bias_initializer": "constant_",
        "fcnet_bias_initializer_kwargs": {"value": 0},
    },
    "the tensor as a kwarg": {
        "fcnet_kernel_initializer": "zeros_",
        "fcnet_kernel_initializer_kwargs": {"tensor": 1},
    },
    "a generator kwarg": {
        "fcnet_kernel_initializer": "normal_",
        "fcnet_kernel_initializer_kwargs": {"generator": 1},
    },
    "a non-finite kwarg": {
        "fcnet_bias_initializer": "constant_",
        "fcnet_bias_initializer_kwargs": {"val": math.nan},
    },
    "an object kwarg": {
        "fcnet_bias_initializer": "constant_",
        "fcnet_bias_initializer_kwargs": {"val": object()},
    },
    "a missing required kwarg": {"fcnet_bias_initializer": "constant_"},
    "kwargs without an initializer": {"head_fcnet_bias_initializer_kwargs": {"val": 0.0}},
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_anything_but_a_torch_init_function_or_name_is_one_clear_error(name):
    given = HOSTILE[name]
    with pytest.raises(ConfigError, match=r"model_config [a-z_]+initializer") as error:
        resolve_model_config(given)
    assert any(key in str(error.value) for key in given)  # names the setting it refuses
    if "kwargs" not in name and "kwarg" not in name:
        assert "xavier_uniform_" in str(error.value)  # the choices are named
    with pytest.raises(ConfigError):
        DefaultModelConfig(**given)


def test_an_initializer_that_cannot_fit_the_layer_is_a_config_error_at_build():
    with pytest.raises(ConfigError, match=r"fcnet_bias_initializer='eye_'.*shape"):
        PolicyNet(BOX, DISCRETE, {"fcnet_bias_initializer": "eye_"})


def test_hyperparameters_and_checkpoints_keep_the_initializers_as_names(tmp_path):
    model_config = DefaultModelConfig(
        fcnet_hiddens=[16],
        fcnet_kernel_initializer=nn.init.xavier_uniform_,
        fcnet_bias_initializer=nn.init.constant_,
        fcnet_bias_initializer_kwargs={"val": 0.5},
    )
    run = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .training(train_batch_size=32, minibatch_size=32, num_epochs=1)
        .rl_module(model_config=model_config)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        stored = run.algorithm.hparams["model_config"]
        assert stored["fcnet_kernel_initializer"] == "xavier_uniform_"
        assert stored["fcnet_bias_initializer"] == "constant_"
        assert stored["fcnet_bias_initializer_kwargs"] == {"val": 0.5}
        bias = run.algorithm.state_dict()["policies.default_policy.policy_net.encoder.net.0.bias"]
        assert torch.equal(bias, torch.full_like(bias, 0.5))
        run.train()
        path = run.save(tmp_path / "a.ckpt")
        weights = {k: v.clone() for k, v in run.algorithm.state_dict().items()}
    finally:
        run.stop()
    raw = torch.load(path, weights_only=True)  # plain data: no function objects inside
    assert raw["hyper_parameters"]["model_config"]["fcnet_kernel_initializer"] == "xavier_uniform_"
    restored = TrainingRun.from_checkpoint(
        path, trainer_kwargs={"default_root_dir": str(tmp_path), "logger": False}
    )
    try:
        assert restored.algorithm.model_config.fcnet_bias_initializer_kwargs == {"val": 0.5}
        for key, value in restored.algorithm.state_dict().items():
            assert torch.equal(value, weights[key]), key
    finally:
        restored.stop()
    # A checkpoint is untrusted: a name outside torch.nn.init is refused, not resolved.
    raw["hyper_parameters"]["model_config"]["fcnet_kernel_initializer"] = "os.system"
    ckpt.add_checksum(raw)
    hostile = tmp_path / "hostile.ckpt"
    torch.save(raw, hostile)
    with pytest.raises((ConfigError, CheckpointError), match=r"os\.system"):
        TrainingRun.from_checkpoint(
            hostile, trainer_kwargs={"default_root_dir": str(tmp_path), "logger": False}
        )


def test_an_rl_module_specs_initializer_function_is_stored_by_name():
    spec = RLModuleSpec(
        observation_space=spaces.Box(-1.0, 1.0, (3,)),
        action_space=spaces.Discrete(2),
        model_config={"fcnet_kernel_initializer": torch.nn.init.xavier_uniform_, "fcnet_hiddens": [8]},
    )
    stored = spec.to_plain()["model_config"]
    assert stored == {"fcnet_kernel_initializer": "xavier_uniform_", "fcnet_hiddens": [8]}
    with pytest.raises(ConfigError, match=r"fcnet_kernel_initializer must be a torch\.nn\.init initializer"):
        RLModuleSpec(model_config={"fcnet_kernel_initializer": print}).to_plain()
