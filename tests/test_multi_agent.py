"""Multi-agent: the env API, the runner, PettingZoo adapters, learning, self-play and errors."""

from __future__ import annotations

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from pettingzoo.classic import tictactoe_v3
from pettingzoo.sisl import waterworld_v4
from pettingzoo.test import parallel_api_test
from pettingzoo.utils import BaseWrapper

from lightning_rl import register_env, registry
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.callbacks import StopOnEnvSteps
from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentEnvRunner
from lightning_rl.envs.classes import MultiAgentCartPole, TicTacToe
from lightning_rl.envs.multi_agent import to_pettingzoo
from lightning_rl.envs.wrappers import ParallelPettingZooEnv, PettingZooEnv
from lightning_rl.errors import ConfigError, EnvError, SpaceError
from lightning_rl.self_play import LeagueCallback, Matchmaking, SelfPlayCallback, play_matches
from lightning_rl.training_run import TrainingRun

TWO_POLICIES = {"policies": {"p0", "p1"}, "policy_mapping_fn": {0: "p0", 1: "p1"}}
CARTPOLE = dict(
    num_envs_per_env_runner=4,
    train_batch_size=256,
    minibatch_size=256,
    num_epochs=20,
    lr=1.25e-3,
    gamma=0.98,
    lambda_=0.8,
    lr_schedule=[[0, 1.25e-3], [300_000, 0.0]],
    clip_param_schedule=[[0, 0.2], [300_000, 0.0]],
    evaluation_duration=10,
    seed=0,
)


def runner_for(algo, num_envs=2) -> MultiAgentEnvRunner:
    return MultiAgentEnvRunner(algo.env_runner_spec(num_envs=num_envs))


# -- env API and runner ------------------------------------------------------------------------
def test_multi_agent_cartpole_runner_returns_one_flat_batch_per_policy():
    algo = PPO(MultiAgentCartPole, {"num_agents": 2}, **TWO_POLICIES)
    result = runner_for(algo).sample(30, state=algo.policy_state())
    assert set(result.data) == {"p0", "p1"}
    for batch in result.data.values():
        m = batch["action"].shape[0]
        assert batch["observation"].shape == (m, 4) and batch["next"]["reward"].shape == (m, 1)
        assert batch["next"]["done"][-1].item(), "every segment ends done"
    assert result.stats.num_agent_steps == sum(b["action"].shape[0] for b in result.data.values())


def test_agents_leaving_early_and_per_agent_returns():
    algo = PPO(MultiAgentCartPole, {"num_agents": 3}, policies={"p"}, policy_mapping_fn=lambda a, e, **k: "p")
    stats = runner_for(algo, num_envs=1).evaluate(3, state=algo.policy_state()).stats
    for total, per_agent, length in zip(stats.returns, stats.agent_returns, stats.lengths, strict=True):
        assert set(per_agent) == {"0", "1", "2"}
        assert total == pytest.approx(sum(per_agent.values()))
        assert length == max(per_agent.values()), "the episode lasts as long as its last agent"


def test_turn_based_game_with_masks_never_plays_an_illegal_move():
    algo = PPO(
        TicTacToe,
        policies={"main": None, "random": "random"},
        policy_mapping_fn=Matchmaking([("main", ["random"])], ["player_0", "player_1"]),
    )
    runner = runner_for(algo, num_envs=4)
    result = runner.sample(300, state=algo.policy_state())  # TicTacToe raises on an illegal move
    main = result.data["main"]
    assert main["observation"]["action_mask"].shape[-1] == 9
    # The final transition of every game carries the game's outcome for the player.
    finals = main["next"]["reward"][main["next"]["terminated"]]
    assert set(finals.tolist()) <= {-1.0, 0.0, 1.0}
    assert len(result.stats.returns) > 20


def test_masked_logits_give_illegal_actions_zero_probability():
    algo = PPO(TicTacToe, policies={"main"}, policy_mapping_fn=lambda a, e, **k: "main")
    net = algo.policies["main"].policy_net
    mask = torch.tensor([[0, 1, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.int8)
    (logits,) = net({"observation": torch.zeros(1, 18), "action_mask": mask})
    probs = torch.softmax(logits, -1)
    assert probs[0, mask[0] == 0].sum() == 0.0
    assert torch.isfinite(torch.distributions.Categorical(logits=logits).entropy()).all()


class AssertLegal(BaseWrapper):
    """Fails the test if an illegal move ever reaches the PettingZoo env."""

    def step(self, action):
        agent = self.env.agent_selection
        if action is not None and not (self.terminations[agent] or self.truncations[agent]):
            mask = self.observe(agent)["action_mask"]
            assert mask[action] == 1, f"illegal action {action} reached the env"
        super().step(action)


def test_pettingzoo_classic_game_trains_with_action_masks(tmp_path):
    register_env("ttt-pz", lambda _: PettingZooEnv(AssertLegal(tictactoe_v3.env())))
    try:
        run = (
            PPOConfig(defaults="native")
            .environment("ttt-pz")
            .env_runners(
                env_to_module_connector=[
                    {"name": "FlattenObservations", "config": {"keys_to_flatten": ["observation"]}}
                ]
            )
            .training(train_batch_size=256, minibatch_size=128, num_epochs=2)
            .trainer(default_root_dir=str(tmp_path))
            .build_algo()
        )
        for _ in range(2):
            result = run.train()
        run.stop()
        assert result["env_runners"]["num_episodes"] > 0
        assert "default_policy" in result["learners"]
    finally:
        registry.envs.unregister("ttt-pz")


def test_waterworld_snippet_trains_three_iterations_with_per_policy_metrics(tmp_path):
    register_env("env", lambda _: PettingZooEnv(waterworld_v4.env(max_cycles=100)))
    try:
        config = (
            PPOConfig(defaults="native")
            .environment("env")
            .multi_agent(
                policies={"pursuer_0", "pursuer_1"},
                policy_mapping_fn=lambda agent_id, episode, **kw: agent_id,
            )
            .training(train_batch_size=400, minibatch_size=200, num_epochs=2)
            .trainer(default_root_dir=str(tmp_path))
        )
        algo = config.build_algo()
        results = [algo.train() for _ in range(3)]
        algo.stop()
    finally:
        registry.envs.unregister("env")
    last = results[-1]
    assert set(last["learners"]) >= {"pursuer_0", "pursuer_1"}
    assert set(last["env_runners"]["module_episode_returns_mean"]) == {"pursuer_0", "pursuer_1"}


def test_parallel_pettingzoo_env_runs_on_ray_runners(ray_session, tmp_path):
    register_env("ww-parallel", lambda _: ParallelPettingZooEnv(waterworld_v4.parallel_env(max_cycles=50)))
    try:
        algo = PPO("ww-parallel", num_env_runners=2, train_batch_size=200, minibatch_size=100, num_epochs=1)
        trainer = pl.Trainer(
            max_epochs=2,
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
        )
        trainer.fit(algo)
    finally:
        registry.envs.unregister("ww-parallel")
    assert trainer.callback_metrics["num_env_steps_sampled_lifetime"] == 2 * 200


def test_our_multi_agent_env_passes_pettingzoo_parallel_api_test():
    parallel_api_test(to_pettingzoo(MultiAgentCartPole({"num_agents": 3})), num_cycles=200)


# -- learning ----------------------------------------------------------------------------------
def fit_until_both(algo, tmp_path, threshold=450.0, budget=300_000):
    class BothPolicies(pl.Callback):
        reached: int | None = None

        def on_validation_end(self, trainer, module):
            returns = [
                float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("evaluation/module_episode")
            ]
            if returns and all(r >= threshold for r in returns):
                self.reached = module.num_env_steps_sampled_lifetime
                trainer.should_stop = True

    stop = BothPolicies()
    trainer = pl.Trainer(
        max_epochs=2000,
        check_val_every_n_epoch=10,
        callbacks=[stop, StopOnEnvSteps(budget)],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(algo)
    return stop.reached, trainer.callback_metrics


@pytest.mark.learning
def test_two_policies_each_learn_their_cartpole(tmp_path):
    pl.seed_everything(0, verbose=False)
    reached, metrics = fit_until_both(
        PPO(MultiAgentCartPole, {"num_agents": 2}, **TWO_POLICIES, **CARTPOLE), tmp_path
    )
    assert reached is not None and reached <= 300_000, metrics
    assert {"evaluation/module_episode_returns_mean/p0", "evaluation/module_episode_returns_mean/p1"} <= set(
        metrics
    )


@pytest.mark.learning
def test_one_shared_policy_learns_both_cartpoles(tmp_path):
    pl.seed_everything(0, verbose=False)
    algo = PPO(MultiAgentCartPole, {"num_agents": 2}, **CARTPOLE)
    assert algo.policy_ids == ["default_policy"]
    reached, metrics = fit_until_both(algo, tmp_path, threshold=900)  # one policy: the sum of both agents
    assert reached is not None and reached <= 300_000, metrics


@pytest.mark.learning
def test_self_play_beats_a_random_player_in_90_percent_of_200_games(tmp_path):
    pl.seed_everything(0, verbose=False)
    agents = ["player_0", "player_1"]
    callback = SelfPlayCallback("main", agents, base_opponents=["random"], win_rate_threshold=0.85)
    algo = PPO(
        TicTacToe,
        policies={"main": None, "random": "random"},
        policy_mapping_fn=callback.matchmaking(),
        num_envs_per_env_runner=16,
        train_batch_size=2048,
        minibatch_size=512,
        num_epochs=8,
        lr=3e-3,
        model_config={"fcnet_hiddens": [128, 128]},
        seed=0,
    )
    trainer = pl.Trainer(
        # Against random after 16/18/20/22/25/30/40 iterations: 0.93/0.94/0.935/0.90/0.90/0.89/0.905
        # (self-play: main then trains against its own snapshots). Each policy's batch holds only
        # its own seats' steps; it took 100 while the random seat's steps leaked into main's.
        max_epochs=18,
        limit_val_batches=0,
        callbacks=[callback],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(algo)
    result = play_matches(algo, "main", "random", num_games=200, agents=agents)
    assert result["games"] == 200
    assert result["win_rate"] >= 0.9, result


def test_league_snapshots_reach_the_runners_and_survive_checkpoints(tmp_path):
    agents = ["player_0", "player_1"]
    league = LeagueCallback(
        "main",
        agents,
        base_opponents=["random"],
        win_rate_threshold=0.0,
        min_episodes=1,
        exploiter_policy="main_exploiter",
    )
    run = TrainingRun(
        PPO(
            TicTacToe,
            policies={"main": None, "random": "random", "main_exploiter": None},
            policy_mapping_fn=league.matchmaking(),
            num_envs_per_env_runner=4,
            train_batch_size=128,
            minibatch_size=64,
            num_epochs=1,
            seed=0,
        ),
        {"default_root_dir": str(tmp_path), "callbacks": [league]},
    )
    for _ in range(3):
        run.train()
    algo = run.algorithm
    assert league.snapshots == ["main_v0", "main_v1", "main_v2"]
    assert league.exploiter_snapshots, "the exploiter was snapshotted too"
    assert set(league.opponents()) >= {"random", "main_v0", "main_exploiter"}
    assert not any(p.requires_grad for p in algo.policies["main_v0"].parameters())
    assert algo.policies_to_train == ["main", "main_exploiter"]
    runner = run.datamodule.train_group.local_runner
    assert {"main_v0", "main_v1"} <= set(runner.policies), "snapshots were built on the runners"
    assert any(
        "main_v0" in e or "main_v1" in e or "main_exploiter_v0" in e
        for e in run.datamodule.last_episode_policy_returns
    )
    path = run.save(tmp_path / "league.ckpt")
    run.stop()
    restored = TrainingRun.from_checkpoint(path, {"default_root_dir": str(tmp_path)})
    assert {"main_v0", "main_v1", "main_v2"} <= set(restored.algorithm.policies)
    assert torch.equal(
        restored.algorithm.policies["main_v0"].policy_net.head.weight,
        algo.policies["main_v0"].policy_net.head.weight,
    )
    restored.stop()


# -- bad input ---------------------------------------------------------------------------------
def test_mapping_to_an_unknown_policy_names_agent_and_policy():
    # Agents with equal spaces: as in RLlib, the mapping first runs with a real episode.
    algo = PPO(
        MultiAgentCartPole,
        policies={"p0", "p1"},
        policy_mapping_fn=lambda a, e, **k: "p0" if a == 0 else "p9",
    )
    with pytest.raises(ConfigError, match=r"mapped agent 1 to policy 'p9', which is not one of the policies"):
        runner_for(algo).sample(2, state=algo.policy_state())

    class Mixed(MultiAgentCartPole):
        def __init__(self, config=None):
            super().__init__(config)
            self.observation_spaces[1] = gym.spaces.Box(-1, 1, (7,), np.float32)

    # Agents with different spaces: the mapping (episode=None) decides the spaces at build time.
    with pytest.raises(
        ConfigError, match=r"maps agent 1 to 'p9', which is not one of the policies \['p0', 'p1'\]"
    ):
        PPO(Mixed, policies={"p0", "p1"}, policy_mapping_fn=lambda a, e, **k: "p0" if a == 0 else "p9")


def test_a_mapping_that_goes_wrong_during_an_episode_names_agent_and_policy():
    def mapping(agent_id, episode, **kw):
        return "p0" if episode is None else "nope"

    algo = PPO(MultiAgentCartPole, policies={"p0"}, policy_mapping_fn=mapping)
    with pytest.raises(ConfigError, match=r"mapped agent 0 to policy 'nope'.*\['p0'\]"):
        runner_for(algo).sample(2, state=algo.policy_state())


class UndeclaredAgent(MultiAgentCartPole):
    def reset(self, *, seed=None, options=None):
        obs, infos = super().reset(seed=seed, options=options)
        obs["ghost"] = obs[0]
        return obs, infos


def test_an_agent_missing_from_the_spaces_is_named():
    algo = PPO(MultiAgentCartPole, policies={"p"}, policy_mapping_fn=lambda a, e, **k: "p")
    spec = algo.env_runner_spec(num_envs=1)
    spec.env_creator.creator = UndeclaredAgent
    with pytest.raises(SpaceError, match=r"Agent 'ghost' received an observation but has no entry"):
        MultiAgentEnvRunner(spec).sample(1)


def test_an_action_dict_with_a_missing_agent_is_named():
    env = MultiAgentCartPole({"num_agents": 2})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing \[1\]"):
        env.step({0: 1})
    aec = PettingZooEnv(tictactoe_v3.env())
    aec.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing \['player_1'\]|missing \['player_0'\]"):
        aec.step({"nobody": 0})


def test_policies_without_a_multi_agent_env_are_refused():
    with pytest.raises(ConfigError, match="need a MultiAgentEnv"):
        PPO("CartPole-v1", policies={"p0", "p1"}, policy_mapping_fn=lambda a, e, **k: "p0")


def test_agents_sharing_a_policy_need_equal_spaces():
    class Mixed(MultiAgentCartPole):
        def __init__(self, config=None):
            super().__init__(config)
            self.observation_spaces[1] = gym.spaces.Box(-1, 1, (7,), np.float32)

    with pytest.raises(SpaceError, match=r"Agents 0 and 1 both map to policy 'shared'"):
        PPO(Mixed, policies={"shared"}, policy_mapping_fn=lambda a, e, **k: "shared")


def test_a_gymnasium_env_in_the_multi_agent_runner_is_refused():
    algo = PPO(MultiAgentCartPole, policies={"p"}, policy_mapping_fn=lambda a, e, **k: "p")
    spec = algo.env_runner_spec(num_envs=1)
    spec.env_creator.creator = lambda ctx: gym.make("CartPole-v1")
    with pytest.raises(EnvError, match="not a lightning_rl MultiAgentEnv"):
        MultiAgentEnvRunner(spec)


class FixedLengthGame(MultiAgentCartPole):
    """Two CartPole agents whose episodes last ``lengths[copy]`` steps in env copy ``copy``;
    counts the steps each copy was asked to take."""

    def __init__(self, config=None):
        super().__init__({"num_agents": 2})
        self.length = config["lengths"][config.vector_index]
        self.steps_taken = self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed, options=options)

    def step(self, action_dict):
        obs, rewards, _, _, infos = super().step(action_dict)
        self.t += 1
        self.steps_taken += 1
        over = self.t >= self.length
        return (
            obs,
            rewards,
            {**{a: over for a in obs}, "__all__": over},
            {**{a: False for a in obs}, "__all__": False},
            infos,
        )


def test_evaluation_stops_stepping_a_copy_once_its_episodes_are_counted():
    algo = PPO(FixedLengthGame, {"lengths": [3, 5]}, policies={"p"}, policy_mapping_fn=lambda a, e, **k: "p")
    runner = runner_for(algo, num_envs=2)
    stats = runner.evaluate(2, state=algo.policy_state()).stats
    assert sorted(stats.lengths) == [3, 5] and stats.num_env_steps == 8
    # Copy 0's one episode ended after 3 steps: it was left alone while copy 1 played its 5.
    assert [env.steps_taken for env in runner.envs] == [3, 5]
    # Training steps every copy again, from fresh episodes.
    runner.sample(4, state=algo.policy_state())
    assert [env.steps_taken for env in runner.envs] == [7, 9] and [env.t for env in runner.envs] == [1, 4]
