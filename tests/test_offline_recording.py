"""Recording episodes to Parquet: schema round trip, bounded files and memory, atomic publishing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from gymnasium import spaces

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.env_runners.env_runner import EnvRunner, EnvRunnerSpec
from lightning_rl.envs.registration import resolve_env
from lightning_rl.errors import ConfigError
from lightning_rl.modules.policy_networks import PolicySpec, StochasticPolicy
from lightning_rl.offline import OfflineDataError, RecordingSpec, resolve_input_files
from lightning_rl.offline.config import OutputConfig
from lightning_rl.offline.reader import open_parquet
from lightning_rl.offline.schema import EpisodeLayout, space_leaves
from lightning_rl.offline.writer import ParquetFileWriter

# Every step an env copy takes, as the env saw it: {vector_index: [(obs, action, reward, ...)]}.
TRACE: dict[int, list[dict]] = defaultdict(list)


class DictObsEnv(gym.Env):
    """Dict observations of three kinds (float vector, uint8 grid, Discrete), Box actions,
    episodes ending by termination or truncation, and numeric info; logs every step to TRACE."""

    observation_space = spaces.Dict(
        {
            "position": spaces.Box(-10.0, 10.0, (2,), np.float32),
            "grid": spaces.Box(0, 255, (3, 3), np.uint8),
            "phase": spaces.Discrete(4),
        }
    )
    action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)

    def __init__(self, config=None) -> None:
        self.index = int(getattr(config, "vector_index", 0))
        self.rng = np.random.default_rng(self.index)

    def _obs(self):
        return {
            "position": self.rng.normal(size=2).astype(np.float32),
            "grid": self.rng.integers(0, 256, (3, 3), dtype=np.uint8),
            "phase": int(self.rng.integers(4)),
        }

    def reset(self, *, seed=None, options=None):
        self.t = 0
        self.length = int(self.rng.integers(3, 9))
        self.obs = self._obs()
        TRACE[self.index].append({"reset": self.obs})
        return self.obs, {}

    def step(self, action):
        self.t += 1
        reward = float(self.rng.normal())
        terminated = self.t >= self.length and self.length % 2 == 0
        truncated = self.t >= self.length and not terminated
        previous, self.obs = self.obs, self._obs()
        TRACE[self.index].append(
            {
                "obs": previous,
                "action": np.array(action),
                "reward": reward,
                "next": self.obs,
                "terminated": terminated,
                "truncated": truncated,
            }
        )
        return (
            self.obs,
            reward,
            terminated,
            truncated,
            {"env_index": self.index, "global_step": len(TRACE[self.index])},
        )


def dict_obs_runner(directory, num_envs=3, **config) -> EnvRunner:
    flat = spaces.Box(-np.inf, np.inf, (2 + 9 + 4,), np.float32)
    spec = EnvRunnerSpec(
        env_creator=resolve_env(DictObsEnv),
        policy_spec=PolicySpec(
            StochasticPolicy,
            {"observation_space": flat, "action_space": spaces.Box(-1.0, 1.0, (2,), np.float32)},
        ),
        num_envs=num_envs,
        env_to_module=[{"name": "FlattenObservations", "config": {}}],
        module_to_env=[{"name": "UnsquashActions", "config": {}}],
        seed=0,
        recorder=RecordingSpec(str(directory), config),
    )
    return EnvRunner(spec)


def test_schema_round_trip_gives_identical_arrays(tmp_path):
    TRACE.clear()
    runner = dict_obs_runner(tmp_path)
    for length in (7, 13, 5):
        runner.sample(length)
    runner.stop()
    table = pq.read_table(resolve_input_files(str(tmp_path)))
    assert table.num_rows == 3 * (7 + 13 + 5)
    assert set(table.column_names) >= {
        "episode_id",
        "t",
        "observation.position",
        "observation.grid",
        "observation.phase",
        "action",
        "reward",
        "terminated",
        "truncated",
        "next_observation.grid",
        "action_log_prob",
        "info.env_index",
    }
    layout = EpisodeLayout(DictObsEnv.observation_space, DictObsEnv.action_space)
    leaves = {leaf.column: leaf for leaf in layout.observation_leaves + layout.next_observation_leaves}
    columns = {name: leaves[name].from_arrow(table.column(name)) for name in leaves}
    action = layout.action_leaves[0].from_arrow(table.column("action"))
    env_index = table.column("info.env_index").to_numpy()
    step = table.column("info.global_step").to_numpy()
    for row in range(table.num_rows):
        truth = TRACE[int(env_index[row])][int(step[row]) - 1]
        for key in ("position", "grid", "phase"):
            assert np.array_equal(columns[f"observation.{key}"][row], truth["obs"][key])
            assert np.array_equal(columns[f"next_observation.{key}"][row], truth["next"][key])
        assert columns["observation.grid"].dtype == np.uint8
        assert np.array_equal(action[row], truth["action"])
        assert table.column("reward")[row].as_py() == truth["reward"]
        assert table.column("terminated")[row].as_py() == truth["terminated"]
        assert table.column("truncated")[row].as_py() == truth["truncated"]
    # Episodes are contiguous and in time order; the final observation ends each one.
    frame = table.select(["episode_id", "t", "terminated", "truncated"]).to_pandas()
    for _, episode in frame.groupby("episode_id", sort=False):
        assert list(episode.index) == list(range(episode.index[0], episode.index[0] + len(episode)))
        assert list(episode.t) == list(range(episode.t.iloc[0], episode.t.iloc[0] + len(episode)))
        assert not (episode.terminated | episode.truncated).iloc[:-1].any()


def test_leaf_conversion_round_trips_every_space_kind():
    space = spaces.Tuple(
        (spaces.MultiDiscrete([3, 4]), spaces.MultiBinary(5), spaces.Box(-1, 1, (), np.float64))
    )
    rng = np.random.default_rng(0)
    for leaf, values in zip(
        space_leaves(space, "observation"),
        (rng.integers(0, 3, (6, 2)), rng.integers(0, 2, (6, 5)), rng.normal(size=6)),
        strict=True,
    ):
        assert leaf.column.startswith("observation.")
        back = leaf.from_arrow(pa.chunked_array([leaf.to_arrow(values[:4]), leaf.to_arrow(values[4:])]))
        assert np.array_equal(back, values.astype(leaf.dtype))
        sliced = leaf.from_arrow(leaf.to_arrow(values).slice(2, 3))
        assert np.array_equal(sliced, values[2:5].astype(leaf.dtype))


def test_files_and_writer_memory_are_bounded(tmp_path):
    layout = EpisodeLayout(spaces.Box(-1, 1, (64,), np.float32), spaces.Discrete(2))
    schema = layout.schema(with_log_prob=False)
    config = OutputConfig(max_rows_per_file=100, max_file_size=10**9, row_group_bytes=8_000)
    writer = ParquetFileWriter(tmp_path, schema, config)
    rows, chunk = 0, 37
    for i in range(30):
        writer.write(_rows(schema, chunk, start=i * chunk))
        rows += chunk
        assert writer.buffered_rows < 100
    writer.close()
    counts = [pq.ParquetFile(p).metadata.num_rows for p in writer.files_written]
    assert sum(counts) == rows and max(counts) <= 100
    # One write call's rows plus what is below one row group: never the whole file.
    assert writer.peak_buffered_bytes < 8_000 + chunk * 600
    by_bytes = ParquetFileWriter(tmp_path / "bytes", schema, OutputConfig(max_file_size=20_000))
    by_bytes.write(_rows(schema, 1000, start=0))
    by_bytes.close()
    assert len(by_bytes.files_written) >= 10
    assert (
        max(pq.ParquetFile(p).metadata.row_group(0).total_byte_size for p in by_bytes.files_written) <= 25_000
    )


def _rows(schema: pa.Schema, n: int, start: int) -> pa.Table:
    t = np.arange(start, start + n)
    obs = np.random.default_rng(start).normal(size=(n, 64)).astype(np.float32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(obs.reshape(-1)), 64)
    return pa.table(
        {
            "episode_id": pa.array(["e"] * n),
            "t": pa.array(t),
            "observation": flat,
            "action": pa.array(t % 2),
            "reward": pa.array(np.ones(n)),
            "terminated": pa.array(np.zeros(n, bool)),
            "truncated": pa.array(np.zeros(n, bool)),
            "next_observation": flat,
        },
        schema=schema,
    )


def test_recorder_memory_stays_bounded_on_episodes_that_never_end(tmp_path):
    TRACE.clear()
    runner = dict_obs_runner(tmp_path, num_envs=2, row_group_bytes=2_000, max_rows_per_file=500)
    runner.env.envs[0].length = runner.env.envs[1].length = 10**9
    recorder = runner.recorder
    for env in runner.env.envs:
        env.reset = _never_ending_reset(env)
    peak = 0
    for _ in range(40):
        runner.sample(25)
        peak = max(peak, recorder.buffered_rows)
    runner.stop()
    # Chunks of still-running episodes go out once a row group's worth is pending.
    assert peak <= 2 * 25 + 2_000 // 40
    table = pq.read_table(resolve_input_files(str(tmp_path)), columns=["episode_id", "t"])
    assert table.num_rows == 40 * 25 * 2
    frame = table.to_pandas()
    assert frame.groupby("episode_id").t.apply(lambda t: sorted(t) == list(range(len(t)))).all()


def _never_ending_reset(env):
    original = env.reset

    def reset(**kwargs):
        obs, info = original(**kwargs)
        env.length = 10**9
        return obs, info

    return reset


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, pyarrow as pa
    from gymnasium import spaces
    from lightning_rl.offline.config import OutputConfig
    from lightning_rl.offline.schema import EpisodeLayout
    from lightning_rl.offline.writer import ParquetFileWriter

    layout = EpisodeLayout(spaces.Box(-1, 1, (256,), np.float32), spaces.Discrete(2))
    schema = layout.schema(with_log_prob=False)
    config = OutputConfig(max_rows_per_file=10**9, max_file_size=10**12, row_group_bytes=100_000)
    writer = ParquetFileWriter(sys.argv[1], schema, config)

    def rows(n, start):
        t = np.arange(start, start + n)
        obs = pa.FixedSizeListArray.from_arrays(pa.array(np.random.rand(n * 256).astype(np.float32)), 256)
        return pa.table({"episode_id": pa.array(["e"] * n), "t": pa.array(t), "observation": obs,
                         "action": pa.array(t % 2), "reward": pa.array(np.ones(n)),
                         "terminated": pa.array(np.zeros(n, bool)), "truncated": pa.array(np.zeros(n, bool)),
                         "next_observation": obs}, schema=schema)

    writer.write(rows(500, 0))
    writer.flush()  # one complete file
    print("published", flush=True)
    start = 500
    while True:  # a second file that never completes
        writer.write(rows(200, start))
        start += 200
    """
)


def test_a_killed_writer_leaves_no_readable_partial_file(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "published"
        deadline = time.time() + 60
        while time.time() < deadline:
            partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            if partial and partial[0].stat().st_size > 1_000_000:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert partial and partial[0].exists(), "the writer was killed before it started a second file"
    complete = resolve_input_files(str(tmp_path))
    assert len(complete) == 1 and pq.ParquetFile(complete[0]).metadata.num_rows == 500
    assert resolve_input_files(str(tmp_path / "*")) == complete  # globs skip temporary files too
    with pytest.raises(OfflineDataError, match="not a complete Parquet file") as error:
        open_parquet(str(partial[0]))
    assert partial[0].name in str(error.value)


def test_ppo_records_every_sampled_step_from_ray_runners(ray_session, tmp_path):
    algo = PPO(
        "CartPole-v1",
        num_env_runners=2,
        num_envs_per_env_runner=2,
        train_batch_size=128,
        minibatch_size=64,
        num_epochs=1,
        output=str(tmp_path),
        output_config={"max_rows_per_file": 40},
    )
    trainer = pl.Trainer(
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(algo)
    files = resolve_input_files(str(tmp_path))
    table = pq.read_table(files)
    assert table.num_rows == 3 * 128  # the actors published everything when fit ended
    assert max(pq.ParquetFile(f).metadata.num_rows for f in files) <= 40
    workers = {json.loads(pq.read_schema(f).metadata[b"lightning_rl"])["worker_index"] for f in files}
    assert workers == {1, 2}
    assert algo.env_runner_spec(num_envs=1, evaluation=True).recorder is None


def test_bad_output_settings_give_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="output_config key 'max_rows'"):
        PPO("CartPole-v1", output=str(tmp_path), output_config={"max_rows": 10})
    with pytest.raises(ConfigError, match="max_file_size"):
        PPO("CartPole-v1", output=str(tmp_path), output_config={"max_file_size": 0})
    with pytest.raises(ConfigError, match="output is None"):
        PPO("CartPole-v1", output_config={"max_rows_per_file": 10})
    with pytest.raises(ConfigError, match="multi-agent"):
        PPO("MultiAgentCartPole", output=str(tmp_path))


def test_cli_output_flag_records_a_training_run(tmp_path):
    executable = shutil.which("lightning-rl")
    cmd = [executable] if executable else [sys.executable, "-m", "lightning_rl.cli"]
    output = tmp_path / "episodes"
    config = Path(__file__).resolve().parents[1] / "configs" / "ppo" / "cartpole.yaml"
    batch = yaml.safe_load(config.read_text())["model"]["init_args"]["train_batch_size"]
    proc = subprocess.run(
        [
            *cmd,
            "fit",
            "--config",
            str(config),
            "--model.num_env_runners",
            "0",
            "--model.output",
            str(output),
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_table(resolve_input_files(str(output))).num_rows == 2 * batch
