"""The policy as a file for client-side inference: ONNX or TorchScript, connectors baked in.

It is :class:`~lightning_rl.export.ExportedPolicy` (the same env-to-module connectors, network
and module-to-env connectors as every runner) with two changes that training needs:

* the sampling noise is an *input* (``noise``: uniform (0, 1) ``[B, n]`` for Discrete actions,
  standard normal ``[B, d]`` for Box actions), so a client in any language seeds its own
  random numbers, and a constant noise (0.5 / 0) gives the greedy action;
* besides the env ``action`` it returns the network's own ``module_action`` and its
  ``action_log_prob``, which on-policy learners (PPO's probability ratio) need with every step.

ONNX goes through torch's TorchScript-based exporter: tens of milliseconds per weights version
instead of seconds for the ``torch.export`` one (``lightning_rl.export``'s choice for one-off
files); clients fetch a fresh model every time the learner's weights move.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lightning_rl.errors import ConfigError
from lightning_rl.export import METADATA_KEY, ExportedPolicy, example_inputs, metadata
from lightning_rl.modules.distributions import CategoricalDistribution
from lightning_rl.optional import require
from lightning_rl.policy import Policy, PolicyRecipe

if TYPE_CHECKING:
    from lightning_rl.external_server.backend import PolicyBackend

MODEL_FORMATS = ("onnx", "torchscript")
OUTPUT_NAMES = ["action", "module_action", "action_log_prob"]
_LOG_SQRT_2PI = 0.9189385332046727  # log(sqrt(2 pi))


class SamplingPolicy(ExportedPolicy):
    """raw observations + noise -> (env action, module action, log-probability of the module action)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy, explore=True)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *observations, noise = inputs
        x: Any = dict(zip(self.keys, observations, strict=True)) if self.keys is not None else observations[0]
        for module in self.obs_modules:
            x = module(x)
        params = self.inference_policy.net(x)
        if isinstance(self.distribution, CategoricalDistribution):
            log_probs = torch.log_softmax(params[0], dim=-1)
            # Gumbel-max with the client's uniform noise, as the runners' exponential trick.
            module_action = (log_probs - torch.log(-torch.log(noise))).argmax(dim=-1)
            log_prob = log_probs.gather(-1, module_action.unsqueeze(-1)).squeeze(-1)
        else:
            loc, scale = params
            module_action = loc + scale * noise
            log_prob = (-0.5 * noise.pow(2) - scale.log() - _LOG_SQRT_2PI).sum(-1)
        action = module_action
        for module in self.action_modules:
            action = module(action)
        if self.discrete_start:
            action = action + self.discrete_start
        return action, module_action, log_prob


def noise_spec(policy: Policy) -> dict[str, Any]:
    net = getattr(policy.inference_policy, "net", None)
    distribution = getattr(net, "distribution", None)
    if isinstance(distribution, CategoricalDistribution):
        return {
            "name": "noise",
            "distribution": "uniform",
            "shape": ["batch", distribution.n],
            "dtype": "float32",
        }
    return {
        "name": "noise",
        "distribution": "normal",
        "shape": ["batch", distribution.dim],
        "dtype": "float32",
    }


class LocalModelExporter:
    """Exports the backend's current policy from a snapshot, so the export may run on a worker
    thread while the server's thread keeps serving (and loading new weights)."""

    def __init__(self, backend: PolicyBackend) -> None:
        self.backend = backend

    def _recipe(self) -> PolicyRecipe:
        backend = self.backend
        return PolicyRecipe(
            policy_id=backend.policy_id,
            observation_space=backend.observation_space,
            action_space=backend.action_space,
            env_to_module=list(backend.env_to_module_specs),
            module_to_env=list(backend.module_to_env_specs),
            policy_spec=backend.policy_spec,
            # set_state replaces these dicts instead of changing them, so references suffice;
            # the connector state is copied because observations keep updating it.
            weights=backend.weights,
            extra=copy.deepcopy(backend.extra),
            connector_state=copy.deepcopy(backend.env_to_module.get_state()),
        )

    def job(self, fmt: str) -> Callable[[], tuple[bytes, dict[str, Any]]]:
        """Snapshot now (caller's thread); the returned callable exports (any thread)."""
        if fmt not in MODEL_FORMATS:
            raise ConfigError(f"Unknown model format {fmt!r}. Choices: {', '.join(MODEL_FORMATS)}.")
        recipe = self._recipe()
        version = self.backend.weights_version
        return functools.partial(self._export, recipe, version, fmt)

    def export(self, fmt: str) -> tuple[bytes, dict[str, Any]]:
        return self.job(fmt)()

    def _export(self, recipe: PolicyRecipe, version: int, fmt: str) -> tuple[bytes, dict[str, Any]]:
        policy = Policy(recipe, seed=0)
        try:
            module = SamplingPolicy(policy).eval()
        except ConfigError:
            raise ConfigError(
                "Client-side inference needs a stateless policy that samples from a categorical or "
                f"diagonal-Gaussian PolicyNet (PPO's StochasticPolicy); "
                f"{type(policy.inference_policy).__name__} is not one. "
                "Use server-side inference (get_action) with this algorithm."
            ) from None
        examples = example_inputs(policy)
        noise = noise_spec(policy)
        examples["noise"] = torch.rand(2, int(noise["shape"][1])).clamp(1e-6, 1 - 1e-6)
        info = metadata(policy, fmt, True, {k: v for k, v in examples.items() if k != "noise"})
        info.update(
            weights_version=version,
            noise=noise,
            outputs=list(OUTPUT_NAMES),
            output_name="action",
        )
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = (
                _onnx_bytes(module, examples) if fmt == "onnx" else _torchscript_bytes(module, examples, info)
            )
        if fmt == "onnx":
            data = _with_onnx_metadata(data, info)
        return data, info


def _onnx_bytes(module: torch.nn.Module, examples: dict[str, torch.Tensor]) -> bytes:
    names = list(examples)
    buffer = io.BytesIO()
    exporter_log = logging.getLogger("torch.onnx")
    previous = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            module,
            tuple(examples.values()),
            buffer,
            dynamo=False,
            input_names=names,
            output_names=OUTPUT_NAMES,
            dynamic_axes={name: {0: "batch"} for name in names + OUTPUT_NAMES},
            opset_version=17,
        )
    finally:
        exporter_log.setLevel(previous)
    return buffer.getvalue()


def _with_onnx_metadata(data: bytes, info: dict[str, Any]) -> bytes:
    onnx = require("onnx", purpose="Serving an ONNX model to external clients")
    model = onnx.load_from_string(data)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    return model.SerializeToString()


def _torchscript_bytes(
    module: torch.nn.Module, examples: dict[str, torch.Tensor], info: dict[str, Any]
) -> bytes:
    traced = torch.jit.trace(module, tuple(examples.values()), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={f"{METADATA_KEY}.json": json.dumps(info)})
    return buffer.getvalue()
