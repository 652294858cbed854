"""The ``lightning-rl`` command: LightningCLI's ``fit``/``validate`` plus ``list``, ``export``,
``evaluate`` and ``plot`` (see :mod:`lightning_rl.commands`).

``lightning-rl fit --config configs/ppo/cartpole.yaml --model.lr 1e-3`` is plain LightningCLI:
every Trainer flag and every algorithm ``__init__`` argument is a flag, ``--print_config``
prints the merged YAML. Algorithms may be named by registry name (case-insensitive,
``--model ppo``) or class path; registered plugins are imported before parsing so
LightningCLI's subclass resolution sees them.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from lightning_rl import registry
from lightning_rl.commands import cmd_evaluate, cmd_export, cmd_plot
from lightning_rl.errors import LightningRLError, PluginError, unknown_name_message


def _preload_algorithms() -> dict[str, BaseException]:
    """Import every registered algorithm so ``--model <ClassName>`` resolves; keep failures."""
    failures: dict[str, BaseException] = {}
    for name in registry.algorithms.names():
        try:
            registry.algorithms.get(name)
        except PluginError as exc:
            failures[name.lower()] = exc
    return failures


def _resolve_model_argument(argv: list[str], failures: dict[str, BaseException]) -> list[str]:
    """``--model ppo`` -> ``--model lightning_rl.algorithms.ppo.ppo.PPO`` (or one clear error)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model" and i + 1 < len(out):
            value_index, value = i + 1, out[i + 1]
        elif arg.startswith("--model="):
            value_index, value = i, arg.split("=", 1)[1]
        else:
            continue
        if value.endswith((".yaml", ".yml", ".json")) or value.startswith("{"):
            continue  # a config for the model group, not a class name
        if value.lower() in failures:
            raise failures[value.lower()]
        try:
            cls = registry.get_algorithm_class(value)
        except LightningRLError:
            if "." in value:
                raise
            raise LightningRLError(
                unknown_name_message("algorithm", value, registry.algorithms.names())
            ) from None
        resolved = f"{cls.__module__}.{cls.__qualname__}"
        out[value_index] = resolved if arg == "--model" else f"--model={resolved}"
    return out


def _cli_class() -> type:
    from jsonargparse import lazy_instance
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import CSVLogger

    from lightning_rl.algorithms.base import Algorithm

    class LightningRLCLI(LightningCLI):
        """LightningCLI with RL defaults: CSV logs, no sanity validation, seeds to runners."""

        def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
            trainer_defaults = {
                "num_sanity_val_steps": 0,
                "logger": lazy_instance(CSVLogger, save_dir="lightning_logs"),
                "log_every_n_steps": 1,
            }
            trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
            super().__init__(
                Algorithm,
                subclass_mode_model=True,
                auto_configure_optimizers=False,
                trainer_defaults=trainer_defaults,
                save_config_kwargs={"overwrite": True},
                args=args,
                run=run,
                **kwargs,
            )

        def before_instantiate_classes(self) -> None:
            # The run's seed also seeds the env copies, unless the model sets its own.
            config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
            seed = config.get("seed_everything")
            init_args = config.get("model", {}).get("init_args", {})
            if init_args is not None and init_args.get("seed") is None and isinstance(seed, int):
                init_args["seed"] = seed

        def _parse_ckpt_path(self) -> None:
            # LightningCLI reads the checkpoint's hyperparameters with a raw torch.load; read it
            # through lightning-rl first so a missing, truncated or foreign file is one clear error.
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path:
                from lightning_rl.checkpoint import load_checkpoint

                load_checkpoint(ckpt_path)
            super()._parse_ckpt_path()

        def after_fit(self) -> None:
            _print_summary(self.trainer)

        def after_validate(self) -> None:
            _print_summary(self.trainer)

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
            # The RL progress bar is the CLI's default bar: added unless the bar is off or the
            # config already has one (Lightning refuses two bars, or a bar with the bar off).
            from lightning.pytorch.callbacks import ProgressBar

            from lightning_rl.progress import RLProgressBar

            existing = config.get("callbacks") or []
            configured = [*(existing if isinstance(existing, list) else [existing]), *callbacks]
            wants_bar = config.get("enable_progress_bar") is not False
            if wants_bar and not any(isinstance(c, ProgressBar) for c in configured):
                callbacks = [*callbacks, RLProgressBar()]
            from lightning_rl.trainer_defaults import add_resilience_defaults

            callbacks, config["plugins"] = add_resilience_defaults(
                configured, callbacks, config.get("plugins")
            )
            return super()._instantiate_trainer(config, callbacks)

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


def cmd_list(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-rl list", description="Show registered algorithms, envs and connectors."
    )
    parser.add_argument("--kind", choices=["algorithm", "env", "connector"], help="only this kind")
    args = parser.parse_args(list(argv))
    rows = [r for r in registry.list_registered() if args.kind is None or r["kind"] == args.kind]
    widths = {k: max([len(k)] + [len(r[k]) for r in rows]) for k in ("kind", "name", "source", "target")}
    header = "  ".join(k.upper().ljust(widths[k]) for k in widths) + "  STATUS"
    print(header)
    for row in rows:
        print("  ".join(row[k].ljust(widths[k]) for k in widths) + "  " + row["status"])
    return 0


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


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "list": cmd_list,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "plot": cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-rl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    if argv and argv[0] in COMMANDS:
        try:
            return COMMANDS[argv[0]](argv[1:])
        except LightningRLError as exc:
            print(f"lightning-rl {argv[0]}: error: {exc}", file=sys.stderr)
            return 2
    try:
        failures = _preload_algorithms()
        argv = _resolve_model_argument(argv, failures)
    except LightningRLError as exc:
        print(f"lightning-rl: error: {exc}", file=sys.stderr)
        return 2
    try:
        # Pass the (name-resolved) arguments through sys.argv: DDP re-executes sys.argv for
        # its other ranks, and LightningCLI warns when given both.
        sys.argv = [sys.argv[0], *argv]
        _cli_class()()
    except Exception as exc:
        # jsonargparse wraps errors raised in an algorithm's __init__ into a long "does not
        # validate against any of the Union subtypes" report; show the user's own error.
        cause = _lightning_rl_error(exc)
        if cause is None:
            raise
        print(f"lightning-rl: error: {cause}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
