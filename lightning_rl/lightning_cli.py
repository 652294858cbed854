"""``lightning-rl fit | validate | test``: LightningCLI with RL defaults.

:mod:`lightning_rl.cli` dispatches here; this module holds the LightningCLI subclass (CSV logs,
no sanity validation, the run's seed to the env copies, the RL progress bar, atomic checkpoint
writes), the resolution of ``--model NAME`` through the registry, and the closing summary of a
``fit`` (why it stopped, where its logs, config and checkpoints are).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import EarlyStopping, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from lightning_rl import registry
from lightning_rl.algorithms.base import Algorithm
from lightning_rl.callbacks import CheckpointOnInterrupt, StopOnEnvSteps, StopOnReturn
from lightning_rl.checkpoint_format import check_algorithm, checkpoint_algorithm, load_checkpoint
from lightning_rl.cli_errors import check_yaml_files, explain_parse_error, flag_values
from lightning_rl.errors import LightningRLError, PluginError, unknown_name_message
from lightning_rl.progress import RLProgressBar
from lightning_rl.trainer_defaults import add_resilience_defaults

# Where the CLI's CSV logs go: one folder per run, lightning_logs/version_N.
LOG_DIR = "lightning_logs"

# The commands LightningCLI runs (the Trainer method of the same name).
LIGHTNING_COMMANDS = ("fit", "validate", "test")

_YAML_SUFFIXES = (".yaml", ".yml", ".json")


def _preload_algorithms() -> None:
    """Import every registered algorithm so jsonargparse can resolve a bare class name; a
    plugin that fails to import fails only the lookups of its own name."""
    for name in registry.algorithms.names():
        try:
            registry.algorithms.get(name)
        except PluginError:
            continue


def _model_class_paths(argv: Sequence[str]) -> list[str]:
    """Every model class path the arguments give: ``--model X``, ``--model.class_path X``, a
    ``--model`` file's or inline mapping's ``class_path`` and a ``--config`` file's ``model`` (a
    path or a mapping with ``class_path``). Unreadable files give nothing (:func:`check_yaml_files`
    reports them)."""
    paths: list[str] = []
    for flag, value in flag_values(argv):
        inline_or_file = value.startswith("{") or value.endswith(_YAML_SUFFIXES)
        if flag == "--model.class_path" or (flag == "--model" and not inline_or_file):
            paths.append(value)
            continue
        if flag not in ("--model", "--config", "-c"):
            continue
        try:
            loaded = yaml.safe_load(value if value.startswith("{") else Path(value).read_text())
        except (OSError, yaml.YAMLError):
            continue
        model = loaded.get("model") if isinstance(loaded, dict) and flag in ("--config", "-c") else loaded
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            paths.append(model["class_path"])
        elif isinstance(model, str):
            paths.append(model)
    return paths


def _needs_every_algorithm(argv: Sequence[str]) -> bool:
    """Whether jsonargparse must see every algorithm imported.

    It resolves a bare class name (``class_path: PPO``) only among the :class:`Algorithm`
    subclasses already imported, and its help lists them; a dotted class path it imports
    itself. Importing all of them costs the README's main job ~0.7 s of start-up and ~70 MB
    (DQN, SAC and DreamerV3 bring torchrl's data, envs and modules), so a run whose model is
    named by dotted paths imports only its own algorithm."""
    if any(arg in ("-h", "--help") or arg.startswith("--model.help") for arg in argv):
        return True
    paths = _model_class_paths(argv)
    # A path to another config file (``model: ppo.yaml``) may name a bare class inside it.
    return not paths or any("." not in path or path.endswith(_YAML_SUFFIXES) for path in paths)


def _resolve_model_argument(argv: list[str]) -> list[str]:
    """``--model ppo`` -> ``--model lightning_rl.algorithms.ppo.ppo.PPO`` (or one clear error)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model" and i + 1 < len(out):
            value_index, value = i + 1, out[i + 1]
        elif arg.startswith("--model="):
            value_index, value = i, arg.split("=", 1)[1]
        else:
            continue
        if value.endswith(_YAML_SUFFIXES) or value.startswith("{"):
            continue  # a config for the model group, not a class name
        try:
            cls = registry.get_algorithm_class(value)
        except PluginError:
            raise
        except LightningRLError:
            if "." in value:
                raise
            raise LightningRLError(
                unknown_name_message("algorithm", value, registry.algorithms.names())
            ) from None
        resolved = f"{cls.__module__}.{cls.__qualname__}"
        out[value_index] = resolved if arg == "--model" else f"--model={resolved}"
    return out


def _model_from_checkpoint(argv: list[str]) -> list[str]:
    """``validate``/``test --ckpt_path X`` alone: the algorithm is the one the checkpoint names
    (LightningCLI needs a model class before it reads the checkpoint's hyperparameters)."""
    given = dict(flag_values(argv[1:]))
    if argv[0] == "fit" or "--ckpt_path" not in given or given.keys() & {"--config", "-c", "--model"}:
        return argv
    name = checkpoint_algorithm(load_checkpoint(given["--ckpt_path"]))
    return [argv[0], "--model", name, *argv[1:]] if name else argv  # before any --model.ARG


class LightningRLCLI(LightningCLI):
    """LightningCLI with RL defaults: CSV logs, no sanity validation, seeds to runners."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        trainer_defaults = {
            "num_sanity_val_steps": 0,
            # One predictable folder per run: ./lightning_logs/version_N (save_dir moves it).
            "logger": lazy_instance(CSVLogger, save_dir=".", name=LOG_DIR),
            "log_every_n_steps": 1,
        }
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
        # Parse errors raise (and main() explains them in one line) instead of printing
        # the whole usage text; each subcommand has its own parser.
        parser_kwargs = {
            "exit_on_error": False,
            **{c: {"exit_on_error": False} for c in LIGHTNING_COMMANDS},
        }
        parser_kwargs.update(kwargs.pop("parser_kwargs", {}))
        super().__init__(
            Algorithm,
            subclass_mode_model=True,
            auto_configure_optimizers=False,
            trainer_defaults=trainer_defaults,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=parser_kwargs,
            args=args,
            run=run,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # No ``predict``: see lightning_rl.cli.NOT_OFFERED.
        return {name: {"model", "dataloaders", "datamodule"} for name in ("validate", "test")} | {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}
        }

    def before_instantiate_classes(self) -> None:
        # The run's seed also seeds the env copies, unless the model sets its own.
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        seed = config.get("seed_everything")
        init_args = config.get("model", {}).get("init_args", {})
        if init_args is not None and init_args.get("seed") is None and isinstance(seed, int):
            init_args["seed"] = seed

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters with a raw torch.load; read it
        # through lightning-rl first so a missing, truncated or foreign file, or one of another
        # algorithm than the config's, is one clear error.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path:
            checkpoint = load_checkpoint(ckpt_path)
            model = self.config[subcommand].get("model")
            class_path = model.get("class_path") if model is not None and hasattr(model, "get") else None
            if class_path:
                check_algorithm(
                    checkpoint,
                    registry.get_algorithm_class(class_path),
                    source=f"Checkpoint {ckpt_path!r}",
                )
        super()._parse_ckpt_path()

    def fit(self, model: Any, **kwargs: Any) -> None:
        # Also say where things are when the run is interrupted (Ctrl+C, SIGTERM).
        try:
            self.trainer.fit(model, **kwargs)
        except BaseException as exc:
            if self.trainer.is_global_zero:
                print("\n".join(fit_summary(self.trainer, interrupted=exc)), flush=True)
            raise

    def after_fit(self) -> None:
        _print_summary(self.trainer)
        if self.trainer.is_global_zero:
            print("\n".join(fit_summary(self.trainer)), flush=True)

    def after_validate(self) -> None:
        _print_summary(self.trainer)

    def after_test(self) -> None:
        _print_summary(self.trainer)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        # The RL progress bar is the CLI's default bar: added unless the bar is off or the
        # config already has one (Lightning refuses two bars, or a bar with the bar off).
        existing = config.get("callbacks") or []
        configured = [*(existing if isinstance(existing, list) else [existing]), *callbacks]
        wants_bar = config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, RLProgressBar()]
        callbacks, config["plugins"] = add_resilience_defaults(configured, callbacks, config.get("plugins"))
        return super()._instantiate_trainer(config, callbacks)


def _cli_class() -> type:
    """The CLI class (kept as a function for callers that build it, e.g. tests)."""
    return LightningRLCLI


def _print_summary(trainer: Any) -> None:
    metrics = trainer.callback_metrics
    keys = [
        "evaluation/episode_return_mean",
        "env_runners/episode_return_mean",
        "num_env_steps_sampled_lifetime",
    ]
    parts = [f"{k}={float(metrics[k]):.2f}" for k in keys if k in metrics]
    if parts and trainer.is_global_zero:
        print(f"[lightning-rl] iterations={trainer.current_epoch} " + " ".join(parts), flush=True)


def stop_reason(trainer: Any, interrupted: BaseException | None = None) -> str:
    """Why a ``fit`` ended, in words: target return, env-step cap, max_epochs, interruption ..."""
    module = trainer.lightning_module
    steps = getattr(module, "num_env_steps_sampled_lifetime", None) if module is not None else None
    at_steps = f" ({steps:,} env steps)" if isinstance(steps, int) else ""
    if interrupted is not None:
        # Lightning turns Ctrl+C into SystemExit(1) after its own cleanup, SIGTERM into SIGTERMException.
        if isinstance(interrupted, KeyboardInterrupt | SystemExit):
            kind = "Ctrl+C"
        elif type(interrupted).__name__ == "SIGTERMException":
            kind = "SIGTERM"
        else:
            return f"failed in iteration {trainer.current_epoch + 1}{at_steps}: {type(interrupted).__name__}"
        return f"interrupted ({kind}) in iteration {trainer.current_epoch + 1}{at_steps}"
    for callback in trainer.callbacks:
        if isinstance(callback, StopOnReturn) and callback.reached_at is not None:
            iteration, reached = callback.reached_at
            return (
                f"target return {callback.threshold:g} ({callback.metric}) reached at {reached:,} env steps "
                f"(iteration {iteration + 1})"
            )
        if isinstance(callback, StopOnEnvSteps) and callback.reached_at is not None:
            iteration, reached = callback.reached_at
            return (
                f"env-step cap {callback.max_env_steps:,} reached: {reached:,} env steps "
                f"(iteration {iteration + 1})"
            )
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch:
            return f"EarlyStopping on {callback.monitor} in iteration {callback.stopped_epoch + 1}{at_steps}"
    if (
        trainer.max_epochs is not None
        and trainer.max_epochs >= 0
        and trainer.current_epoch >= trainer.max_epochs
    ):
        return f"max_epochs={trainer.max_epochs} iterations reached{at_steps}"
    if trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step:
        return f"max_steps={trainer.max_steps} optimizer steps reached{at_steps}"
    return f"stopped by a callback (trainer.should_stop) after {trainer.current_epoch} iterations{at_steps}"


def fit_summary(trainer: Any, interrupted: BaseException | None = None) -> list[str]:
    """The closing lines of ``lightning-rl fit``: why it stopped and where its files are."""
    lines = [f"[lightning-rl] stopped: {stop_reason(trainer, interrupted)}"]
    # The logger's own folder: Trainer.log_dir is a collective under DDP, and this runs on rank 0 only.
    logger = trainer.loggers[0] if trainer.loggers else None
    log_dir = (getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)) if logger else None
    if log_dir:
        lines.append(f"[lightning-rl] logs: {Path(log_dir)}")
        config = Path(log_dir) / "config.yaml"
        if config.is_file():
            lines.append(f"[lightning-rl] config: {config}")
    checkpointing = trainer.checkpoint_callback
    if checkpointing is not None:
        last = (
            str(Path(checkpointing.last_model_path)) if getattr(checkpointing, "last_model_path", "") else ""
        )
        best = (
            str(Path(checkpointing.best_model_path)) if getattr(checkpointing, "best_model_path", "") else ""
        )
        if best:
            monitor = getattr(checkpointing, "monitor", None)
            label = f"best checkpoint ({monitor})" if monitor else "checkpoint"
            lines.append(f"[lightning-rl] {label}: {best}")
        if last and last != best:
            lines.append(f"[lightning-rl] last checkpoint: {last}")
    for callback in trainer.callbacks:
        if isinstance(callback, CheckpointOnInterrupt) and callback.saved_path:
            lines.append(
                f"[lightning-rl] interrupted checkpoint: {callback.saved_path} (resume: --ckpt_path)"
            )
    return lines


def _lightning_rl_error(exc: BaseException) -> LightningRLError | None:
    """The first lightning-rl error in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, LightningRLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def run_lightning_command(command: str, argv: list[str]) -> int:
    """Run ``fit``/``validate``/``test`` (``argv`` starts with the command); the exit code."""
    try:
        check_yaml_files(argv[1:])
        argv = _model_from_checkpoint(argv)
        argv = _resolve_model_argument(argv)
        if _needs_every_algorithm(argv[1:]):
            _preload_algorithms()
    except LightningRLError as exc:
        print(f"lightning-rl {command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        # Pass the (name-resolved) arguments through sys.argv: DDP re-executes sys.argv for
        # its other ranks, and LightningCLI warns when given both.
        sys.argv = [sys.argv[0], *argv]
        _cli_class()()
    except argparse.ArgumentError as exc:
        message = explain_parse_error(exc, argv[1:])
        print(
            f"lightning-rl {command}: error: {message}\n(all options: lightning-rl {command} --help)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        # jsonargparse wraps errors raised in an algorithm's __init__ into a long "does not
        # validate against any of the Union subtypes" report; show the user's own error.
        cause = _lightning_rl_error(exc)
        if cause is None:
            raise
        print(f"lightning-rl {command}: error: {cause}", file=sys.stderr)
        return 2
    return 0
