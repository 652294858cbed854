"""Start the local Ray of a ``lightning-rl fit`` with Ray runners before Lightning is imported.

A run with Ray EnvRunners waits twice at start-up: for ``import lightning`` (and torch) and
for Ray's processes (GCS, raylet, workers) to come up. Ray's processes run on other cores, so
the console script starts them first, in a background thread
(:func:`~lightning_rl.ray_cluster.start_local_ray_early`), and the imports, the
config parsing and the Trainer's set-up happen while they boot.

The arguments are read here, before LightningCLI can parse them, so this reads only what
decides the runners' local Ray (``num_env_runners``, ``evaluation_num_env_runners`` and their
``num_cpus_per_env_runner``) from the ``--config`` files and ``--model.*`` flags, and leaves
everything else to LightningCLI. It is a guess that cannot do harm: ``ensure_ray`` uses the
early Ray only when it is exactly the local Ray the run asks for, and otherwise shuts it down
and starts (or joins) the right one. No guess is made (and nothing starts) when the arguments
name a cluster to join (``address``, ``RAY_ADDRESS``), set ``ray_init_kwargs``, GPUs or custom
resources per runner, Ray learners, or ask only for help or the merged config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_rl.ray_cluster import start_local_ray_early

# Settings with which the run's Ray is not a plain local one sized by its runners' CPUs.
NOT_GUESSED = (
    "address",
    "ray_init_kwargs",
    "num_gpus_per_env_runner",
    "evaluation_num_gpus_per_env_runner",
    "custom_resources_per_env_runner",
    "evaluation_custom_resources_per_env_runner",
    "num_learners",
)
# Arguments after which LightningCLI prints and exits without training.
NO_RUN = ("-h", "--help", "--print_config")


def _model_section(path: str) -> dict[str, Any] | None:
    try:
        with Path(path).open(encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return None  # LightningCLI reports it
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return {} if model is None else None
    init_args = model.get("init_args", {})
    if not isinstance(init_args, dict):
        return None
    return {**{k: v for k, v in model.items() if k not in ("class_path", "init_args")}, **init_args}


def model_settings(argv: Sequence[str]) -> dict[str, Any] | None:
    """The model settings the ``fit`` arguments give (config files, then flags, in order), or
    None when they cannot be read here (LightningCLI will say why) or start no training."""
    settings: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.split("=", 1)[0] in NO_RUN:
            return None
        name, has_value, value = arg.partition("=")
        step = 1
        if not has_value and name.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, step = args[i + 1], 2
        if name in ("-c", "--config"):
            section = _model_section(value)
            if section is None:
                return None
            settings.update(section)
        elif name.startswith("--model."):
            key = name.removeprefix("--model.").removeprefix("init_args.")
            try:
                settings[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                return None
        i += step
    return settings


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _cpus(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def runner_bundles(settings: dict[str, Any]) -> list[dict[str, float]] | None:
    """The training and evaluation runners' CPU bundles these settings ask for (None: no guess)."""
    if any(settings.get(name) for name in NOT_GUESSED):
        return None
    runners = _count(settings.get("num_env_runners"))
    evaluation = _count(settings.get("evaluation_num_env_runners", 0))
    cpus = _cpus(settings.get("num_cpus_per_env_runner", 1.0))
    evaluation_cpus = settings.get("evaluation_num_cpus_per_env_runner")
    evaluation_cpus = cpus if evaluation_cpus is None else _cpus(evaluation_cpus)
    if runners is None or evaluation is None or cpus is None or evaluation_cpus is None:
        return None
    return [{"CPU": cpus}] * runners + [{"CPU": evaluation_cpus}] * evaluation


def start_ray_early_for_fit(argv: Sequence[str]) -> bool:
    """Start the local Ray in the background if the ``fit`` arguments ask for Ray runners."""
    settings = model_settings(argv)
    bundles = None if settings is None else runner_bundles(settings)
    if not bundles:
        return False
    return start_local_ray_early(bundles)
