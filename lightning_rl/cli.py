"""The ``lightning-rl`` command: LightningCLI's ``fit``/``validate``/``test`` plus ``list``,
``export``, ``evaluate`` and ``plot`` (see :mod:`lightning_rl.commands`).

``lightning-rl fit --config configs/ppo/cartpole.yaml --model.lr 1e-3`` is plain LightningCLI:
every Trainer flag and every algorithm ``__init__`` argument is a flag, ``--print_config``
prints the merged YAML. Algorithms may be named by registry name (case-insensitive,
``--model ppo``) or class path; registered plugins are imported before parsing so
LightningCLI's subclass resolution sees them. ``lightning-rl --help`` lists the commands;
argument and config-file mistakes get one short message (:mod:`lightning_rl.cli_errors`);
``fit`` ends with why it stopped and where its logs, config and checkpoints are.

This module is the console script's dispatcher and stays light, so ``lightning-rl --help``,
``list`` and a mistyped command answer without importing torch or Lightning. The commands
themselves live in :mod:`lightning_rl.lightning_cli` (``fit``/``validate``/``test``) and
:mod:`lightning_rl.commands`; the table below names them by path, the way ``pyproject.toml``
names console scripts and plugins name entry points, and they are resolved when invoked.
Nothing imports this module, so resolving a handler can never close an import cycle.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings
from collections.abc import Callable, Sequence

from lightning_rl import registry
from lightning_rl._imports import import_object
from lightning_rl.cli_ray_start import start_ray_early_for_fit
from lightning_rl.errors import LightningRLError

# Commands run by LightningCLI (the Trainer method of the same name) and their one-line help.
LIGHTNING_COMMANDS = {
    "fit": "train an algorithm: --config FILE.yaml, --model NAME, --model.ARG, --trainer.FLAG",
    "validate": "run evaluation episodes of a config or a checkpoint (--ckpt_path), print the return",
    "test": "the same evaluation episodes as validate, run through Lightning's test loop",
}
OTHER_COMMANDS = {
    "evaluate": "evaluate a checkpoint without a config: N episodes, return mean and std",
    "export": "write a checkpoint's policy (connectors included) as an ONNX or TorchScript file",
    "plot": "draw learning curves (return vs env steps and wall time) from CSV logs",
    "list": "show the registered algorithms, envs and connectors and their packages",
}
NOT_OFFERED = {
    "predict": (
        "'predict' is not offered: an RL policy acts in an environment, not on a fixed dataset. "
        "Use 'lightning-rl evaluate --ckpt_path PATH' for episodes and their return, or "
        "Policy.from_checkpoint(PATH).compute_single_action(obs) in Python (docs/inference.md)."
    )
}


def overview() -> str:
    """What ``lightning-rl`` and ``lightning-rl --help`` print: every command, one line each."""
    commands = {**LIGHTNING_COMMANDS, **OTHER_COMMANDS}
    width = max(map(len, commands))
    lines = [
        "usage: lightning-rl COMMAND [options]",
        "",
        "Reinforcement learning the Lightning way. Commands:",
        *(f"  {name.ljust(width)}  {text}" for name, text in commands.items()),
        "",
        "'lightning-rl COMMAND --help' shows a command's options, e.g.",
        "  lightning-rl fit --config configs/ppo/cartpole.yaml",
        "  lightning-rl fit --model ppo --model.env CartPole-v1 --trainer.max_epochs 50",
        "  lightning-rl evaluate --ckpt_path lightning_logs/version_0/checkpoints",
    ]
    return "\n".join(lines)


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


# Command -> handler ``argv -> exit code``; a path is resolved only when its command runs.
COMMANDS: dict[str, Callable[[Sequence[str]], int] | str] = {
    "list": cmd_list,
    "export": "lightning_rl.commands:cmd_export",
    "evaluate": "lightning_rl.commands:cmd_evaluate",
    "plot": "lightning_rl.commands:cmd_plot",
}
#: ``(command, argv) -> exit code`` for the LightningCLI commands.
LIGHTNING_CLI = "lightning_rl.lightning_cli:run_lightning_command"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-rl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview())
        return 0
    command = argv[0]
    if command in NOT_OFFERED:
        print(f"lightning-rl: error: {NOT_OFFERED[command]}", file=sys.stderr)
        return 2
    if command in COMMANDS:
        handler = COMMANDS[command]
        try:
            return (import_object(handler) if isinstance(handler, str) else handler)(argv[1:])
        except LightningRLError as exc:
            print(f"lightning-rl {command}: error: {exc}", file=sys.stderr)
            return 2
    if command not in LIGHTNING_COMMANDS and not command.startswith("-"):
        known = [*LIGHTNING_COMMANDS, *COMMANDS]
        close = difflib.get_close_matches(command, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(
            f"lightning-rl: error: unknown command {command!r}.{hint} Commands: {', '.join(known)} "
            "(lightning-rl --help).",
            file=sys.stderr,
        )
        return 2
    if command == "fit":
        start_ray_early_for_fit(argv[1:])  # Ray's processes boot while Lightning imports
    return import_object(LIGHTNING_CLI)(command, argv)


if __name__ == "__main__":
    sys.exit(main())
