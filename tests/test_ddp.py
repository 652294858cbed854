"""Multi-learner DDP on CPU (gloo): each rank owns its runners; gradients are averaged.

DDP re-executes the command for its other ranks, so the run is a real ``lightning-rl``
subprocess (under pytest, Lightning would re-run pytest itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.learning
def test_ppo_with_two_ddp_ranks_learns_cartpole_in_lockstep(tmp_path):
    env = {**os.environ, "LIGHTNING_RL_TEST_OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "lightning_rl.cli",
        "fit",
        "--config",
        str(REPO / "configs" / "ppo" / "cartpole.yaml"),
        "--model.num_env_runners",
        "0",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.callbacks+=tests.ddp_probe.RankReport",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert reports[0]["params_sha256"] == reports[1]["params_sha256"], (
        "DDP kept the ranks' parameters identical"
    )
    assert reports[0]["first_observations"] != reports[1]["first_observations"], (
        "each rank sampled its own episodes"
    )
    assert reports[0]["iterations"] == reports[1]["iterations"], "both ranks stopped at the same iteration"
    assert reports[0]["evaluation_return"] >= 450
    assert reports[0]["num_env_steps_sampled_lifetime"] == reports[1]["num_env_steps_sampled_lifetime"]
    checkpoints = list(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    assert len(checkpoints) == 1, "checkpointing happened once"


def test_fluent_learners_config_runs_ddp_with_a_train_loop(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_fluent_script.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"fluent_rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 and r["iterations"] == 10 for r in ranks)
    assert ranks[0]["env_steps"] == ranks[1]["env_steps"] == 2 * 10 * 256, "counters are global"
    assert ranks[0]["evaluation"] == ranks[1]["evaluation"], "evaluation ran once and was shared"
    assert ranks[0]["policy_loss"] == pytest.approx(ranks[1]["policy_loss"]), "learner stats are averaged"
