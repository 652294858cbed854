"""Property tests of per-agent trajectory bookkeeping (hypothesis).

Random patterns of which agents act, join, leave, receive rewards and finish, cut at random
fragment boundaries, must never mix agents' steps, lose a reward, or let a transition cross an
agent's episode end. Observations are tagged (agent, episode, step) so every transition can be
checked against the pattern that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_rl.env_runners.agent_trajectories import AgentTrajectories

AGENTS = ["a", "b", "c"]


@dataclass(frozen=True)
class Obs:
    agent: str
    episode: int
    step: int


step_events = st.fixed_dictionaries(
    {
        "acting": st.sets(st.sampled_from(AGENTS)),  # agents asked to act (if live)
        "rewards": st.dictionaries(st.sampled_from(AGENTS), st.integers(-3, 3)),
        "leaving": st.sets(st.sampled_from(AGENTS)),  # finish individually this step
        "leave_terminated": st.booleans(),
        "final_obs": st.booleans(),
        "episode_ends": st.booleans(),
        "episode_terminated": st.booleans(),
        "cut": st.booleans(),  # the fragment ends after this step
    }
)


def run_pattern(pattern, num_envs=2):
    trajectories = AgentTrajectories()
    emitted = []  # (env, agent, policy, transition)
    expected_kept = 0.0  # rewards that must end up inside transitions
    expected_dropped = 0.0
    for env in range(num_envs):
        episode = 0
        # Per-agent state of this env's episode in the model.
        acted: dict[str, bool] = {}
        open_: dict[str, bool] = {}
        left: set[str] = set()
        hanging: dict[str, float] = {}
        for step, ev in enumerate(pattern):
            # Agents that act: an observation first (closing their open transition), then act.
            for agent in sorted(ev["acting"]):
                if agent in left:
                    continue
                obs = Obs(agent, episode, step)
                if open_.get(agent):
                    trajectories.observe(env, agent, obs)
                    open_[agent] = False
                trajectories.act(env, agent, f"policy_{agent}", obs, step, {})
                open_[agent] = True
                if not acted.get(agent):
                    expected_kept += hanging.pop(agent, 0.0)
                acted[agent] = True
            for agent, reward in ev["rewards"].items():
                trajectories.reward(env, agent, reward)
                if agent in left:
                    expected_dropped += reward  # leaves again later: the model drops it at finish
                    hanging[agent] = hanging.get(agent, 0.0)
                elif open_.get(agent):
                    expected_kept += reward
                else:
                    hanging[agent] = hanging.get(agent, 0.0) + reward
            for agent in sorted(ev["leaving"]):
                if agent in left:
                    continue
                final = Obs(agent, episode, step + 0.5) if ev["final_obs"] else None
                trajectories.finish(env, agent, final, ev["leave_terminated"], not ev["leave_terminated"])
                open_[agent] = False
                expected_dropped += hanging.pop(agent, 0.0)
                left.add(agent)
            if ev["episode_ends"]:
                finals = {a: Obs(a, episode, step + 0.5) for a in AGENTS if ev["final_obs"]}
                trajectories.end_episode(env, ev["episode_terminated"], finals)
                expected_dropped += sum(hanging.values())
                episode += 1
                acted, open_, left, hanging = {}, {}, set(), {}
            if ev["cut"]:
                emitted += [
                    (s.env_index, s.agent_id, s.policy_id, s.transitions)
                    for s in trajectories.pop_completed()
                ]
        trajectories.end_episode(env, True, {})
        expected_dropped += sum(hanging.values())
    emitted += [(s.env_index, s.agent_id, s.policy_id, s.transitions) for s in trajectories.pop_completed()]
    return trajectories, emitted, expected_kept, expected_dropped


@settings(max_examples=300, deadline=None)
@given(st.lists(step_events, min_size=1, max_size=25))
def test_bookkeeping_never_mixes_agents_loses_rewards_or_crosses_episode_ends(pattern):
    trajectories, emitted, expected_kept, expected_dropped = run_pattern(pattern)
    assert trajectories.num_open() == 0
    kept = 0.0
    for _env, agent, policy, transitions in emitted:
        assert policy == f"policy_{agent}", "a segment is always one agent's, with its policy"
        for i, t in enumerate(transitions):
            kept += t.reward
            assert t.observation.agent == agent and t.next_observation.agent == agent, "agents' steps mixed"
            assert t.next_observation.episode == t.observation.episode, "transition crosses an episode end"
            assert t.next_observation.step >= t.observation.step
            assert not (t.terminated and t.truncated)
            done = t.terminated or t.truncated
            if i + 1 < len(transitions):
                following = transitions[i + 1]
                if not done:
                    # Mid-segment, the next transition starts where this one ended.
                    assert following.observation is t.next_observation
            else:
                assert done, "every segment ends done (episode end, agent left, or fragment cut)"
    assert abs(kept - expected_kept) < 1e-9, "a reward given to an acting agent was lost or double counted"
    assert abs(trajectories.dropped_reward - expected_dropped) < 1e-9


def test_turn_based_rewards_reach_the_player_who_moved_earlier():
    trajectories = AgentTrajectories()
    o = {name: Obs(name, 0, i) for i, name in enumerate(["x0", "o0", "x1", "o1"])}
    trajectories.act(0, "x", "p", o["x0"], 0, {})
    trajectories.observe(0, "o", o["o0"])  # o's first observation: nothing open yet
    trajectories.act(0, "o", "p", o["o0"], 1, {})
    trajectories.reward(0, "x", 0.0)
    trajectories.observe(0, "x", o["x1"])
    trajectories.act(0, "x", "p", o["x1"], 2, {})
    # x wins with this move: both players get their reward at the final step.
    trajectories.reward(0, "x", 1.0)
    trajectories.reward(0, "o", -1.0)
    trajectories.finish(0, "x", Obs("x", 0, 9), terminated=True, truncated=False)
    trajectories.finish(0, "o", Obs("o", 0, 9), terminated=True, truncated=False)
    segments = {s.agent_id: s.transitions for s in trajectories.pop_completed()}
    assert [t.reward for t in segments["x"]] == [0.0, 1.0]
    assert [t.reward for t in segments["o"]] == [-1.0]
    assert segments["o"][0].terminated and segments["o"][0].next_observation.step == 9
