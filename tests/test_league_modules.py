"""RLlib's module API on the algorithm facade (issue 19, item 8): ``get_module``, ``add_module``,
``set_state``, ``remove_module``, as RLlib's ``SelfPlayCallback`` calls them to grow a league.

The callback under test (``examples/rllib_ports/classes/self_play_callback.py``) is written
in the shape of RLlib's example class, against those calls only, and runs on TicTacToe with
OpenSpiel's player numbers as agent ids; everything runs for real with in-process runners
(``num_env_runners=0``).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from examples.rllib_ports.classes.player_numbers import PlayerNumbers
from examples.rllib_ports.classes.self_play_callback import SelfPlayCallback
from lightning_rl import DefaultModelConfig, RandomRLModule, register_env
from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentEnvRunner
from lightning_rl.envs.classes import TicTacToe
from lightning_rl.errors import ConfigError, UnknownNameError
from lightning_rl.modules.rl_module import FLOAT_MIN, Columns, MultiRLModuleSpec, RLModule, RLModuleSpec
from lightning_rl.training_run import TrainingRun

register_env("numbered_tictactoe", lambda config: PlayerNumbers(TicTacToe(config)))


class MaskedTiny(RLModule):
    """A user's RLModule for the board game: logits of the board, illegal moves masked."""

    def setup(self):
        size = int(self.observation_space["observation"].shape[0])
        self.logits = torch.nn.Linear(size, int(self.action_space.n))
        self.value = torch.nn.Linear(size, 1)

    def _forward(self, batch, **kwargs):
        obs = batch[Columns.OBS]
        logits = self.logits(obs["observation"])
        return {Columns.ACTION_DIST_INPUTS: torch.where(obs["action_mask"] > 0, logits, FLOAT_MIN)}

    def compute_values(self, batch, embeddings=None):
        return self.value(batch[Columns.OBS]["observation"]).squeeze(-1)


def seat_mapping(agent_id, episode, **kwargs):
    """RLlib's example mapping: main sits at ``hash(episode.id_) % 2``, random at the other seat."""
    return "main" if hash(episode.id_) % 2 == agent_id else "random"


def build(tmp_path, main_spec=None, callbacks=None):
    config = (
        PPOConfig()
        .environment("numbered_tictactoe")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .multi_agent(policies={"main", "random"}, policy_mapping_fn=seat_mapping, policies_to_train=["main"])
        .rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=[16]),
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    "main": main_spec or RLModuleSpec(),
                    "random": RLModuleSpec(module_class=RandomRLModule),
                }
            ),
        )
        .training(train_batch_size=128, minibatch_size=64, num_epochs=1)
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path), logger=False)
    )
    if callbacks is not None:
        config.callbacks(callbacks)
    return config.build_algo()


def states_equal(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_an_rllib_style_self_play_callback_grows_the_league_with_frozen_copies_of_main(tmp_path, capsys):
    # A threshold below any win rate: RLlib's callback adds a snapshot after every iteration.
    algo = build(tmp_path, callbacks=functools.partial(SelfPlayCallback, win_rate_threshold=-1.0))
    try:
        first = algo.train()
        assert first["league_size"] == 3 and 0.0 <= first["env_runners"]["win_rate"] <= 1.0
        assert algo.algorithm.policy_ids == ["main", "random", "main_v1"]
        main_after_1 = algo.get_module("main").get_state()
        snapshot = algo.get_module("main_v1")
        assert states_equal(snapshot.get_state(), main_after_1)  # set_state copied main's weights
        assert not any(p.requires_grad for p in snapshot.parameters())
        assert algo.algorithm.policies_to_train == ["main"]

        second = algo.train()  # main now plays main_v1 only (RLlib's new mapping)
        assert second["league_size"] == 4 and algo.algorithm.policy_ids[-1] == "main_v2"
        returns = second["env_runners"]["module_episode_returns_mean"]
        # The runners acted with the snapshot (random only finishes the games begun before).
        assert {"main", "main_v1"} <= set(returns)
        assert "main_v1" not in second["learners"] and "main" in second["learners"]
        # main_v1 was not trained; main was, and main_v2 is main after the second iteration.
        assert states_equal(algo.get_module("main_v1").get_state(), main_after_1)
        main_after_2 = algo.get_module("main").get_state()
        assert not states_equal(main_after_2, main_after_1)
        assert states_equal(algo.get_module("main_v2").get_state(), main_after_2)

        # A checkpoint re-creates the league (the mapping, a closure, is passed again as in RLlib).
        path = algo.save(tmp_path / "league")
        restored = TrainingRun.from_checkpoint(
            path,
            {"default_root_dir": str(tmp_path), "logger": False},
            trusted_classes=[seat_mapping],
            policy_mapping_fn=seat_mapping,
        )
        try:
            assert restored.algorithm.policy_ids == ["main", "random", "main_v1", "main_v2"]
            assert states_equal(restored.get_module("main_v1").get_state(), main_after_1)
            assert restored.algorithm.policies_to_train == ["main"]
        finally:
            restored.stop()
    finally:
        algo.stop()
    out = capsys.readouterr().out
    assert "new opponent main_v1" in out and "('main', 'main_v1')" in out


@pytest.mark.parametrize("main_class", [None, MaskedTiny], ids=["default_networks", "rl_module"])
def test_add_module_set_state_remove_module_reach_the_runner(tmp_path, main_class):
    algo = build(tmp_path, main_spec=RLModuleSpec(module_class=main_class))
    try:
        algorithm = algo.algorithm
        runner = MultiAgentEnvRunner(algorithm.env_runner_spec(num_envs=1))
        runner.set_state(algorithm.policy_state())
        main = algo.get_module("main")
        assert isinstance(algo.get_module("random"), RandomRLModule)
        if main_class is not None:
            assert type(main) is main_class

        def league_mapping(agent_id, episode, **kwargs):
            return "main" if hash(episode.id_) % 2 == agent_id else "main_v1"

        added = algo.add_module(
            module_id="main_v1",
            module_spec=RLModuleSpec.from_module(main),
            new_agent_to_module_mapping_fn=league_mapping,
        )
        assert type(added) is type(main) and added is algo.get_module("main_v1")
        assert not states_equal(added.get_state(), main.get_state())  # freshly initialised, as RLlib's
        algo.set_state({"learner_group": {"learner": {"rl_module": {"main_v1": main.get_state()}}}})
        assert states_equal(added.get_state(), main.get_state())
        assert algorithm.policies_to_train == ["main"]
        assert not any(p.requires_grad for p in added.parameters())

        # The runner builds main_v1 with main's weights and the new mapping from the next state on.
        runner.set_state(algorithm.policy_state())
        assert runner.policy_mapping_fn is league_mapping
        env = TicTacToe({})
        obs, _ = env.reset(seed=0)
        batch = TensorDict({k: torch.as_tensor(np.asarray(v))[None] for k, v in obs["player_0"].items()}, [1])
        with torch.no_grad():
            greedy = [runner.policies[pid](batch, False, None) for pid in ("main", "main_v1")]
        torch.testing.assert_close(greedy[0]["action"], greedy[1]["action"])
        torch.testing.assert_close(greedy[0]["action_log_prob"], greedy[1]["action_log_prob"])
        sampled = runner.sample(60, state=algorithm.policy_state())
        assert set(sampled.data) == {"main", "main_v1"}

        # Errors name the choices.
        with pytest.raises(UnknownNameError, match=r"'nope'.*\['main', 'random', 'main_v1'\]"):
            algo.get_module("nope")
        with pytest.raises(ConfigError, match=r"'nope'.*main_v1"):
            algo.set_state({"learner_group": {"learner": {"rl_module": {"nope": main.get_state()}}}})
        with pytest.raises(ConfigError, match=r"expected only 'learner'.*learner_group/learner/rl_module"):
            algo.set_state({"learner_group": {"learners": {}}})
        with pytest.raises(ConfigError, match="tensors only"):
            algo.set_state({"learner_group": {"learner": {"rl_module": {"main_v1": {"w": [1.0]}}}}})
        with pytest.raises(ConfigError, match="exists already"):
            algo.add_module("main_v1", RLModuleSpec.from_module(main))
        with pytest.raises(ConfigError, match="Only modules added during the run"):
            algo.remove_module("random")

        algo.remove_module("main_v1", new_agent_to_module_mapping_fn=seat_mapping)
        assert algorithm.policy_ids == ["main", "random"]
        assert "main_v1" not in algorithm.policy_state()["policies"]
        # Games begun against main_v1 finish with it (episodes keep their mapping); then it is gone,
        # and what it still sent is dropped by the learner.
        runner.sample(60, state=algorithm.policy_state())
        later = runner.sample(60, state=algorithm.policy_state())
        assert set(later.data) == {"main", "random"}
        assert algorithm.process_rollout({"main_v1": sampled.data["main_v1"]}) == {}
        runner.stop()
    finally:
        algo.stop()
