"""``lightning-rl export | evaluate | plot``: the subcommands that work on finished runs.

They are plain argparse commands (handled before LightningCLI, which owns ``fit`` and
``validate``). This module is an entry point: it imports the layers it drives at module level,
and :mod:`lightning_rl.cli` imports it only when one of its commands runs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence

from lightning_rl.checkpoint_format import resolve_checkpoint_path
from lightning_rl.errors import ConfigError
from lightning_rl.export import EXPORT_FORMATS, default_export_path, export_policy
from lightning_rl.plotting import DEFAULT_METRICS, plot_learning_curves
from lightning_rl.training_run import TrainingRun, policy_from_checkpoint
from lightning_rl.video import RecordEvaluationVideos


def cmd_export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-rl export",
        description="Write a checkpoint's policy, connectors included, as an ONNX or TorchScript file.",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file (or directory of *.ckpt)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument("--output", help="artifact path (default: next to the checkpoint)")
    parser.add_argument("--policy_id", help="which policy of a multi-agent checkpoint")
    parser.add_argument("--explore", action="store_true", help="sample actions instead of the greedy action")
    args = parser.parse_args(list(argv))
    policy = policy_from_checkpoint(args.ckpt_path, args.policy_id)
    output = args.output or default_export_path(
        resolve_checkpoint_path(args.ckpt_path), args.format, args.policy_id
    )
    path = export_policy(policy, output, args.format, explore=args.explore)
    print(f"[lightning-rl] exported policy {policy.policy_id!r} ({args.format}) to {path}", flush=True)
    return 0


def cmd_evaluate(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-rl evaluate",
        description="Run evaluation episodes of a checkpoint on its evaluation runners; print the return.",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file (or directory of *.ckpt)")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    parser.add_argument("--explore", action="store_true", help="sample actions instead of greedy ones")
    parser.add_argument("--num_env_runners", type=int, help="evaluation Ray actors (default: the run's)")
    parser.add_argument("--num_envs", type=int, help="env copies per evaluation runner (default: auto)")
    parser.add_argument("--video_dir", help="record the first episode of each runner to MP4 files here")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(list(argv))
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}.")
    result = evaluate_checkpoint(
        args.ckpt_path,
        episodes=args.episodes,
        explore=args.explore,
        num_env_runners=args.num_env_runners,
        num_envs=args.num_envs,
        video_dir=args.video_dir,
    )
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(
            f"[lightning-rl] episodes={result['num_episodes']} "
            f"episode_return_mean={result['episode_return_mean']:.2f} "
            f"episode_return_std={result['episode_return_std']:.2f} "
            f"episode_len_mean={result['episode_len_mean']:.1f}",
            flush=True,
        )
        for video in result.get("videos", []):
            print(f"[lightning-rl] video: {video}", flush=True)
    return 0


def evaluate_checkpoint(
    ckpt_path: str,
    episodes: int = 10,
    explore: bool = False,
    num_env_runners: int | None = None,
    num_envs: int | None = None,
    video_dir: str | None = None,
) -> dict:
    """Evaluate a checkpoint exactly as training evaluates: its evaluation runners, frozen filters."""
    callbacks = []
    recorder = None
    if video_dir is not None:
        recorder = RecordEvaluationVideos(video_dir, log_videos=False)
        callbacks.append(recorder)
    trainer_kwargs = {"logger": False, "enable_progress_bar": False, "callbacks": callbacks}
    with TrainingRun.from_checkpoint(ckpt_path, trainer_kwargs=trainer_kwargs) as run:
        overrides = {"evaluation_duration": episodes, "evaluation_explore": explore}
        if num_env_runners is not None:
            overrides["evaluation_num_env_runners"] = num_env_runners
        if num_envs is not None:
            overrides["evaluation_num_envs_per_env_runner"] = num_envs
        run.datamodule.overrides.update(overrides)
        evaluation = run.evaluate()
    result = {
        "num_episodes": int(evaluation.get("num_episodes", 0)),
        "episode_return_mean": float(evaluation.get("episode_return_mean", math.nan)),
        "episode_return_std": float(evaluation.get("episode_return_std", math.nan)),
        "episode_return_min": float(evaluation.get("episode_return_min", math.nan)),
        "episode_return_max": float(evaluation.get("episode_return_max", math.nan)),
        "episode_len_mean": float(evaluation.get("episode_len_mean", math.nan)),
    }
    if recorder is not None:
        result["videos"] = [str(p) for p in recorder.videos]
    return result


def cmd_plot(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-rl plot",
        description="Draw learning curves (return vs env steps and vs wall time) of CSV-logged runs.",
    )
    parser.add_argument("log_dirs", nargs="+", help="directories searched for metrics.csv (one run each)")
    parser.add_argument("--output", "-o", default="learning_curves.png", help="PNG file to write")
    parser.add_argument(
        "--metric",
        action="append",
        dest="metrics",
        help=f"metric to plot (repeatable; default: {', '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(list(argv))
    path = plot_learning_curves(args.log_dirs, args.output, args.metrics or DEFAULT_METRICS, args.title)
    print(f"[lightning-rl] wrote {path}", flush=True)
    return 0
