"""OfflineDataModule: pyarrow and Ray Data reading, in-memory inputs, returns, connectors, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer

from lightning_rl.algorithms.bc import BC
from lightning_rl.algorithms.marwil import MARWIL
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.connectors.base import EnvToModule
from lightning_rl.data.offline import OfflineDataModule
from lightning_rl.errors import ConfigError
from lightning_rl.offline import OfflineDataError, record_episodes
from lightning_rl.offline.returns import segment_returns

GAMMA = 0.9


class EpisodeCounter(EnvToModule):
    """A connector with per-episode state, which shuffled offline rows cannot feed."""

    def __call__(self, obs, *, env_ids=None, update=True):
        return obs

    def episode_start(self, env_ids):
        pass


@pytest.fixture(scope="module")
def cartpole_data(tmp_path_factory):
    """3 files of CartPole episodes from an untrained PPO policy (short episodes, many ends)."""
    path = tmp_path_factory.mktemp("cartpole_random")
    record_episodes(
        PPO("CartPole-v1", seed=0), path, 3000, num_envs=4, output_config={"max_rows_per_file": 1000}
    )
    return path


def datamodule_for(algo, **overrides) -> OfflineDataModule:
    datamodule = OfflineDataModule(**overrides)
    datamodule.attach(algo)
    datamodule.setup("fit")
    return datamodule


def test_segment_returns_match_a_hand_computation():
    # Episode a: 3 steps, terminated. Episode b: 2 steps, truncated. Episode c: cut after 2 steps.
    starts = np.array([1, 0, 0, 1, 0, 1, 0], dtype=bool)
    reward = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    terminated = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
    return_to_go, discount, last = segment_returns(starts, reward, terminated, GAMMA)
    expected = [1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3, 4 + 0.9 * 5, 5, 6 + 0.9 * 7, 7]
    assert np.allclose(return_to_go, expected)
    assert np.allclose(discount, [0, 0, 0, 0.81, 0.9, 0.81, 0.9])
    assert list(last) == [2, 2, 2, 4, 4, 6, 6]


def test_pyarrow_path_serves_module_side_minibatches_with_returns(cartpole_data):
    algo = MARWIL("CartPole-v1", input_=str(cartpole_data), gamma=GAMMA, train_batch_size=300, seed=0)
    datamodule = datamodule_for(algo)
    assert datamodule.read_method == "pyarrow"
    rows = datamodule.reader.rows
    assert rows.batch_size[0] == 3000
    batch = datamodule.next_batch()
    assert batch["observation"].shape == (300, 4) and batch["action"].dtype == torch.int64
    assert batch["next", "reward"].shape == (300, 1)
    # Returns agree with a direct computation over the files (one segment per episode chunk).
    table = pq.read_table(sorted(cartpole_data.glob("*.parquet")))
    ids, t = table.column("episode_id").to_numpy(zero_copy_only=False), table.column("t").to_numpy()
    starts = np.r_[True, (ids[1:] != ids[:-1]) | (t[1:] != t[:-1] + 1)]
    expected, discount, _ = segment_returns(
        starts,
        table.column("reward").to_numpy(),
        table.column("terminated").to_numpy(zero_copy_only=False),
        GAMMA,
    )
    assert np.allclose(rows["return_to_go"].numpy(), expected, atol=1e-5)
    assert np.allclose(rows["bootstrap_discount"].numpy(), discount, atol=1e-6)
    # Every row is served once per pass: 10 minibatches of 300 rows cover all 3000.
    seen = [datamodule.next_batch()["observation"] for _ in range(9)]
    assert (
        torch.cat([batch["observation"], *seen]).unique(dim=0).shape[0]
        == torch.unique(rows["observation"], dim=0).shape[0]
    )


def test_ray_data_streams_the_same_rows_under_a_small_memory_budget(ray_session, cartpole_data):
    algo = MARWIL(
        "CartPole-v1",
        input_=str(cartpole_data),
        gamma=GAMMA,
        train_batch_size=250,
        input_memory_budget_mb=0.05,
    )
    datamodule = datamodule_for(algo)
    assert datamodule.read_method == "ray"  # "auto" streamed: the data is above the budget
    batches = [datamodule.next_batch() for _ in range(12)]
    streamed = torch.cat([b["observation"] for b in batches])
    in_memory = datamodule_for(BC("CartPole-v1", input_=str(cartpole_data), input_read_method="pyarrow"))
    expected = in_memory.reader.rows["observation"]
    order = lambda x: x[torch.argsort(x[:, 0] * 1e6 + x[:, 1])]  # noqa: E731
    assert torch.equal(order(streamed), order(expected))
    assert datamodule.reader.num_passes == 0
    # Returns were computed on Ray Data blocks, before the shuffle.
    batch = batches[0]
    assert batch["bootstrap_observation"].shape == (250, 4)
    assert (batch["return_to_go"] >= 1.0).all()  # CartPole pays 1 per step
    assert ((batch["bootstrap_discount"] >= 0) & (batch["bootstrap_discount"] <= GAMMA)).all()
    datamodule.next_batch()
    assert datamodule.reader.num_passes == 1
    datamodule.close()


def test_tensordicts_and_replay_buffers_feed_the_same_layout():
    rng = torch.Generator().manual_seed(0)
    n, T = 4, 25
    done = torch.rand(n, T, 1, generator=rng) < 0.1
    data = TensorDict(
        {
            "observation": torch.randn(n, T, 4, generator=rng),
            "action": torch.randint(0, 2, (n, T), generator=rng),
            "next": {
                "observation": torch.randn(n, T, 4, generator=rng),
                "reward": torch.ones(n, T, 1),
                "terminated": done,
                "truncated": torch.zeros(n, T, 1, dtype=torch.bool),
            },
        },
        batch_size=[n, T],
    )
    algo = MARWIL("CartPole-v1", input_=[data], gamma=GAMMA, train_batch_size=64)
    assert algo.hparams.input_ is None  # in-memory data stays out of the hyperparameters
    datamodule = datamodule_for(algo)
    rows = datamodule.reader.rows
    assert rows.batch_size[0] == n * T
    # Row 0's return runs to its env copy's first done (or the row's end), never into the next copy.
    first_done = done[0, :, 0].nonzero()
    end = int(first_done[0]) if len(first_done) else T - 1
    assert float(rows["return_to_go"][0]) == pytest.approx(sum(GAMMA**k for k in range(end + 1)), rel=1e-5)
    buffer = ReplayBuffer(storage=LazyTensorStorage(1000))
    buffer.extend(data.reshape(-1))
    from_buffer = datamodule_for(BC("CartPole-v1", train_batch_size=32), input_=buffer)
    assert from_buffer.read_method == "memory" and from_buffer.next_batch()["observation"].shape == (32, 4)


def test_observation_filters_learn_from_the_data(cartpole_data):
    algo = BC(
        "CartPole-v1",
        input_=str(cartpole_data),
        env_to_module_connector=["MeanStdFilter"],
        train_batch_size=500,
        dataset_num_iters_per_learner=6,
    )
    datamodule = datamodule_for(algo)
    dataset = datamodule.train_dataloader().dataset
    batches = list(iter(dataset))
    assert len(batches) == algo.hparams.dataset_num_iters_per_learner
    state = algo.connector_state["default_policy"][0]
    assert state["count"] >= 3000
    raw = datamodule.reader.rows["observation"].double()
    assert torch.allclose(state["mean"], raw.mean(0), atol=1e-4)
    assert batches[-1]["observation"].abs().mean() < 2.0  # normalised


def test_bad_input_gives_one_clear_error_naming_the_file(tmp_path, cartpole_data):
    def setup_error(input_, **kwargs):
        with pytest.raises(ConfigError) as error:
            datamodule_for(BC(kwargs.pop("env", "CartPole-v1"), input_=input_, **kwargs))
        return str(error.value)

    missing = tmp_path / "nowhere"
    assert f"{str(missing)!r} does not exist" in setup_error(str(missing))
    (tmp_path / "empty_dir").mkdir()
    assert "holds no *.parquet files" in setup_error(str(tmp_path / "empty_dir"))
    assert "matches no *.parquet files" in setup_error(str(tmp_path / "*.parquet"))
    good = sorted(cartpole_data.glob("*.parquet"))[0]
    table = pq.read_table(good)
    no_reward = tmp_path / "no_reward.parquet"
    pq.write_table(table.drop_columns(["reward"]), no_reward)
    message = setup_error(str(no_reward))
    assert str(no_reward) in message and "lacks column(s) ['reward']" in message
    wrong_shape = tmp_path / "wrong_shape.parquet"
    obs = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(3 * table.num_rows, np.float32)), 3)
    pq.write_table(
        table.drop_columns(["observation"]).append_column("observation", obs).replace_schema_metadata(None),
        wrong_shape,
    )
    message = setup_error(str(wrong_shape))
    assert str(wrong_shape) in message and "'observation'" in message and "shape (4,)" in message
    message = setup_error(str(good), env="Acrobot-v1")
    assert str(good) in message and "observation_space" in message
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    message = setup_error(str(empty))
    assert "empty" in message and str(empty) in message
    partial = tmp_path / "partial.parquet"
    partial.write_bytes(good.read_bytes()[:2000])
    assert f"{partial} is not a complete Parquet file" in setup_error(str(partial))
    assert "set input_" in setup_error(None)
    with pytest.raises(OfflineDataError, match=r"observation has rows of shape \(3,\)"):
        datamodule_for(
            BC(
                "CartPole-v1",
                input_=[
                    TensorDict(
                        {
                            "observation": torch.zeros(5, 3),
                            "action": torch.zeros(5),
                            "next": {"reward": torch.zeros(5, 1)},
                        },
                        [5],
                    )
                ],
            )
        )
    with pytest.raises(ConfigError, match="per-episode state"):
        datamodule_for(
            BC(
                "CartPole-v1",
                input_=str(good),
                env_to_module_connector=[{"name": f"{__name__}.EpisodeCounter"}],
            )
        )
    with pytest.raises(ConfigError, match="input_read_method"):
        BC("CartPole-v1", input_read_method="spark")


def test_dict_observations_are_reassembled_and_flattened_by_the_connectors(tmp_path):
    from tests.test_offline_recording import DictObsEnv, dict_obs_runner

    runner = dict_obs_runner(tmp_path)
    runner.sample(40)
    runner.stop()
    algo = BC(
        DictObsEnv, input_=str(tmp_path), env_to_module_connector=["FlattenObservations"], train_batch_size=16
    )
    datamodule = datamodule_for(algo)
    batch = datamodule.next_batch()
    assert batch["observation"].shape == (16, 2 + 9 + 4)
    assert batch["action"].shape == (16, 2) and float(batch["action"].abs().max()) <= 1.0  # back in [-1, 1]
    rows = datamodule.reader.rows
    assert rows["observation.grid"].dtype == torch.uint8 and rows["observation.phase"].dtype == torch.int64
