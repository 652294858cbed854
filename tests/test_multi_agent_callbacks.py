"""RLlib callbacks' episode hooks in the multi-agent runner (issue 19, item 2) and seats that
change policy between episodes (RLlib's self-play mapping).

The episode hooks get an RLlib ``MultiAgentEpisode``-like object (``id_``, ``get_return()``,
``agent_episode_ids``, ``module_for``, ``get_rewards()`` per agent, ``custom_data``), and what
they log with ``metrics_logger`` reaches ``train()``'s result under the user's key. RLlib's own
``SelfPlayCallback.on_episode_end`` (win rate from the main agent's last reward) runs as written.
"""

from __future__ import annotations

import pytest
import torch
from pettingzoo.classic import connect_four_v3

from lightning_rl import DefaultModelConfig, PettingZooEnv, RandomRLModule, RLlibCallback
from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.env_runners.agent_trajectories import AgentTrajectories
from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentEnvRunner
from lightning_rl.envs.classes import TicTacToe
from lightning_rl.modules.rl_module import MultiRLModuleSpec, RLModuleSpec

EVENTS: list[str] = []


def seat_mapping(agent_id, episode, **kwargs):
    """RLlib's self-play mapping: main takes seat ``hash(episode.id_) % 2``, random the other."""
    return "main" if hash(episode.id_) % 2 == int(str(agent_id)[-1]) else "random"


class SelfPlayStats(RLlibCallback):
    """RLlib's SelfPlayCallback.on_episode_end (win rate from main's last reward), plus checks
    of the episode object on every hook."""

    def on_episode_start(self, *, episode, env_runner, metrics_logger, env, env_index, rl_module, **kwargs):
        assert episode.env_index == env_index and len(episode) == 0 and episode.get_return() == 0.0
        assert set(rl_module) == {"main", "random"}
        episode.custom_data["steps"] = 0
        EVENTS.append(f"start:{episode.id_}")

    def on_episode_step(self, *, episode, metrics_logger, **kwargs):
        episode.custom_data["steps"] += 1

    def on_episode_end(self, *, episode, env_runner, metrics_logger, env, env_index, rl_module, **kwargs):
        assert episode.is_done and episode.custom_data["steps"] == episode.env_steps()
        EVENTS.append(f"end:{episode.id_}")
        main_agent = "player_0" if episode.module_for("player_0") == "main" else "player_1"
        assert episode.module_for(main_agent) == "main"
        assert {episode.module_for(a) for a in episode.agent_ids} == {"main", "random"}  # one seat each
        rewards = episode.get_rewards()
        assert set(episode.agent_episode_ids) == {"player_0", "player_1"}
        # Each seat's last step holds its game result, also for the seat that did not move last.
        last = {agent: rewards[agent][-1] for agent in rewards}
        assert sum(last.values()) == 0.0 and set(last.values()) in ({0.0}, {-1.0, 1.0})
        assert episode.get_return() == pytest.approx(sum(sum(r) for r in rewards.values()))
        assert episode.agent_steps() == episode.env_steps()  # turn-based: one agent acts per step
        metrics_logger.log_value("win_rate", float(rewards[main_agent][-1] == 1.0), reduce="mean", window=100)
        metrics_logger.log_value("main_return", sum(rewards[main_agent]), reduce="mean")
        metrics_logger.log_value("episodes_seen", 1, reduce="sum")


def test_episode_hooks_run_in_the_multi_agent_runner_with_rllibs_episode(tmp_path):
    EVENTS.clear()
    algo = (
        PPOConfig()
        .environment(TicTacToe, env_config={})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .multi_agent(policies={"main", "random"}, policy_mapping_fn=seat_mapping, policies_to_train=["main"])
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={"main": RLModuleSpec(), "random": RLModuleSpec(module_class=RandomRLModule)}
            )
        )
        .training(train_batch_size=128, minibatch_size=64, num_epochs=1)
        .callbacks(SelfPlayStats)
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        result = algo.train()
    finally:
        algo.stop()
    env_runners = result["env_runners"]
    ends = [e for e in EVENTS if e.startswith("end:")]
    assert len(ends) == env_runners["episodes_seen"] == result["num_episodes_lifetime"] > 5
    assert len(set(ends)) == len(ends)  # one end per episode id
    assert all(f"start:{e[4:]}" in EVENTS for e in ends)
    assert 0.0 <= env_runners["win_rate"] <= 1.0
    # The callback's view of main's returns is the runner's own per-module return.
    assert env_runners["main_return"] == pytest.approx(env_runners["module_episode_returns_mean"]["main"])
    assert "main" in result["learners"] and "random" not in result["learners"]  # policies_to_train
    assert "default_policy" not in result["learners"], "no entry for a module this run does not have"


def test_a_seat_that_changes_policy_between_episodes_feeds_each_policy_its_own_steps(tmp_path):
    """player_0 is main in one episode and random in the next: each policy's batch holds only
    its own steps (the runner's log-probs match the learner's), never the other's."""
    trajectories = AgentTrajectories()
    for episode, policy in enumerate(["main", "random", "main"]):
        trajectories.act(0, "player_0", policy, f"obs{episode}", episode, {})
        trajectories.finish(0, "player_0", "final", terminated=True, truncated=False)
    segments = {
        (s.agent_id, s.policy_id): [t.action for t in s.transitions] for s in trajectories.pop_completed()
    }
    assert segments == {("player_0", "main"): [0, 2], ("player_0", "random"): [1]}

    algo = (
        PPOConfig()
        .environment(lambda _: PettingZooEnv(connect_four_v3.env()))
        .env_runners(num_env_runners=0)
        .multi_agent(policies={"main", "random"}, policy_mapping_fn=seat_mapping, policies_to_train=["main"])
        .rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=[32]),
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={"main": RLModuleSpec(), "random": RLModuleSpec(module_class=RandomRLModule)}
            ),
        )
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        module = algo.algorithm
        runner = MultiAgentEnvRunner(module.env_runner_spec(num_envs=1))
        result = runner.sample(120, state=module.policy_state())
        runner.stop()
    finally:
        algo.stop()
    main = result.data["main"]
    main_policy = module.policies["main"]
    with torch.no_grad():
        log_prob = main_policy.distribution(main_policy.policy_net(main["observation"])).log_prob(
            main["action"]
        )
    torch.testing.assert_close(log_prob.reshape(-1), main["action_log_prob"].reshape(-1))
    # main and random each played about half of the 120 agent steps; no step of random's is in main's.
    num_main, num_random = len(main["action"]), len(result.data["random"]["action"])
    assert num_main + num_random == result.stats.num_agent_steps
    assert 30 < num_main < 90
    # Every decided game ends with +1 for one seat and -1 for the other in the batches.
    rewards = torch.cat([main["next"]["reward"], result.data["random"]["next"]["reward"]]).reshape(-1)
    assert (rewards == 1.0).sum() == (rewards == -1.0).sum() > 0
