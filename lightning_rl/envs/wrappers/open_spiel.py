"""OpenSpiel games as lightning-rl MultiAgentEnvs (RLlib's ``OpenSpielEnv``).

``register_env("open_spiel_env", lambda _: OpenSpielEnv(pyspiel.load_game("connect_four")))``
works as in RLlib; so do a game name (``OpenSpielEnv("connect_four")``) and the registered env
``"OpenSpiel"`` with ``env_config={"game": "connect_four"}``.

What an RLlib user gets, and where it differs:

* Agent ids are the player numbers ``0 .. num_players-1`` (ints, as RLlib's).
* Turn-based (sequential) games: only the player to move observes; simultaneous-move games:
  every player observes and acts each step. Chance nodes (dealing cards, dice) are resolved
  by the env with a generator seeded by ``reset(seed=...)``, so a seeded reset reproduces the
  whole game where RLlib's wrapper draws from numpy's global state.
* Observations: the game's ``observation_tensor`` of the observing player, flattened to a
  float32 vector (``information_state_tensor`` where the game offers no observation tensor,
  or by ``observation_type="information_state"``). By default it comes as
  ``{"observation": <vector>, "action_mask": <int8 per action, 1 = legal>}``: lightning-rl's
  policies read the mask (as they do on PettingZoo's classic games), so a masked policy never
  plays an illegal move. ``action_mask=False`` gives RLlib's bare vector.
* Rewards are the game's per-step rewards (``state.rewards()``), given to every player each
  step; on games with terminal rewards they are RLlib's (the final returns, e.g. +1/-1).
  RLlib reports the cumulative ``returns()`` every step, which counts intermediate rewards
  again on games that have them.
* An illegal move (a legal-range action the game refuses in this state, e.g. a full
  connect-four column) forfeits: the episode terminates, the offender gets
  ``illegal_action_reward`` (-1.0, a loss in win/loss games) and every other player 0, and
  the offender's info says ``{"illegal_action": <action>}``. RLlib instead plays a random legal
  action for the offender and deducts 0.1; a forfeit gives a policy that ignores the mask a
  clear signal and never makes moves the policy did not choose. An action outside the action
  space (or for a player who was not asked) is an error, not a move.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lightning_rl.envs.multi_agent import ALL, MultiAgentEnv
from lightning_rl.errors import ConfigError, UnknownNameError, unknown_name_message
from lightning_rl.optional import require

OBSERVATION_TYPES = ("observation", "information_state")
CHANCE_PLAYER = -1
SIMULTANEOUS_PLAYER = -2


def _pyspiel() -> Any:
    return require("pyspiel", purpose="OpenSpielEnv", extra="open_spiel")


def load_game(game: str, parameters: Mapping[str, Any] | None = None) -> Any:
    """``pyspiel.load_game`` for a name checked against ``pyspiel.registered_names()``.

    Game names come from configs and command lines: an unknown one is one
    :class:`~lightning_rl.errors.UnknownNameError` naming close choices, never a crash inside
    the C++ loader. ``"connect_four(rows=5)"`` (OpenSpiel's own parameter syntax) and a
    ``parameters`` dict both set game parameters.
    """
    pyspiel = _pyspiel()
    if not isinstance(game, str) or not game.strip():
        raise ConfigError(f"An OpenSpiel game must be a game name or a pyspiel.Game, got {game!r}.")
    name = game.strip().partition("(")[0].strip()
    names = list(pyspiel.registered_names())
    if name not in names:
        raise UnknownNameError(unknown_name_message("OpenSpiel game", name, names))
    try:
        if parameters:
            if "(" in game:
                raise ConfigError(
                    f"Give OpenSpiel game parameters once: in the name {game!r} or as parameters "
                    f"{dict(parameters)!r}, not both."
                )
            return pyspiel.load_game(name, dict(parameters))
        return pyspiel.load_game(game.strip())
    except pyspiel.SpielError as exc:
        raise ConfigError(f"OpenSpiel refused game {game!r} with parameters {parameters!r}: {exc}") from exc


class OpenSpielEnv(MultiAgentEnv):
    """A pyspiel game as a :class:`~lightning_rl.envs.multi_agent.MultiAgentEnv` (see the module).

    ``game`` is a ``pyspiel.Game`` (RLlib's form), a game name, or an env config mapping
    ``{"game": ..., "game_parameters": ..., "observation_type": ..., "action_mask": ...,
    "illegal_action_reward": ...}`` (the registered env ``"OpenSpiel"``).
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        game: Any,
        *,
        game_parameters: Mapping[str, Any] | None = None,
        observation_type: str | None = None,
        action_mask: bool = True,
        illegal_action_reward: float = -1.0,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(game, Mapping):
            config = dict(game)
            if "game" not in config:
                raise ConfigError(
                    "OpenSpielEnv's env_config needs 'game' (a name from pyspiel.registered_names(), "
                    f"e.g. 'connect_four'); got keys {sorted(config)}."
                )
            game = config.pop("game")
            game_parameters = config.pop("game_parameters", game_parameters)
            observation_type = config.pop("observation_type", observation_type)
            action_mask = config.pop("action_mask", action_mask)
            illegal_action_reward = config.pop("illegal_action_reward", illegal_action_reward)
            render_mode = config.pop("render_mode", render_mode)
            if config:
                raise ConfigError(
                    f"Unknown OpenSpielEnv setting(s) {sorted(config)}; choices: game, game_parameters, "
                    "observation_type, action_mask, illegal_action_reward, render_mode."
                )
        pyspiel = _pyspiel()
        if isinstance(game, str):
            game = load_game(game, game_parameters)
        elif not isinstance(game, pyspiel.Game):
            raise ConfigError(f"OpenSpielEnv needs a pyspiel.Game or a game name, got {type(game).__name__}.")
        elif game_parameters:
            raise ConfigError("game_parameters apply to a game name; this pyspiel.Game is already loaded.")
        self.env = game  # RLlib's attribute name for the game
        self.type = game.get_type()
        self._simultaneous = self.type.dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS
        if not self._simultaneous and self.type.dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
            raise ConfigError(
                f"OpenSpiel game {self.type.short_name!r} has {self.type.dynamics}; OpenSpielEnv plays "
                "sequential and simultaneous-move games."
            )
        self._observation_type = self._pick_observation_type(observation_type)
        if not np.isfinite(float(illegal_action_reward)):
            raise ConfigError(
                f"illegal_action_reward must be a finite number, got {illegal_action_reward!r}."
            )
        self.illegal_action_reward = float(illegal_action_reward)
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"OpenSpielEnv render_mode must be None or 'ansi', got {render_mode!r}.")
        self.render_mode = render_mode
        self.action_mask = bool(action_mask)
        self.num_agents = game.num_players()
        self.possible_agents = list(range(self.num_agents))
        self.agents = list(self.possible_agents)
        self._num_actions = game.num_distinct_actions()
        size = (
            game.observation_tensor_size()
            if self._observation_type == "observation"
            else game.information_state_tensor_size()
        )
        vector = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        obs_space: gym.Space = vector
        if self.action_mask:
            obs_space = spaces.Dict(
                {"observation": vector, "action_mask": spaces.Box(0, 1, (self._num_actions,), np.int8)}
            )
        self.observation_spaces = {agent: obs_space for agent in self.possible_agents}
        self.action_spaces = {agent: spaces.Discrete(self._num_actions) for agent in self.possible_agents}
        self.state: Any = None
        self._rng = np.random.default_rng()

    def _pick_observation_type(self, requested: str | None) -> str:
        offers = {
            "observation": self.type.provides_observation_tensor,
            "information_state": self.type.provides_information_state_tensor,
        }
        if requested is None:
            for kind in OBSERVATION_TYPES:
                if offers[kind]:
                    return kind
            raise ConfigError(
                f"OpenSpiel game {self.type.short_name!r} provides neither an observation tensor nor an "
                "information state tensor, so it has no vector observation for a policy."
            )
        if requested not in OBSERVATION_TYPES:
            raise ConfigError(
                f"Unknown observation_type {requested!r} for OpenSpielEnv; "
                f"choices: {list(OBSERVATION_TYPES)}."
            )
        if not offers[requested]:
            available = [kind for kind in OBSERVATION_TYPES if offers[kind]]
            raise ConfigError(
                f"OpenSpiel game {self.type.short_name!r} provides no {requested} tensor; "
                f"it offers {available}."
            )
        return requested

    # -- MultiAgentEnv ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.state = self.env.new_initial_state()
        self.agents = list(self.possible_agents)
        self._resolve_chance_nodes()
        return self._observations(self._to_act()), {}

    def step(self, action_dict):
        if self.state is None or self.state.is_terminal():
            raise RuntimeError("OpenSpielEnv.step() needs a running game: call reset() first.")
        acting = self._to_act()
        self.check_actions(action_dict, acting)
        actions = {player: self._check_action(player, action_dict[player]) for player in acting}
        illegal = {
            player: action
            for player, action in actions.items()
            if action not in self.state.legal_actions(player)
        }
        if illegal:
            return self._forfeit(illegal)
        if self.state.current_player() == SIMULTANEOUS_PLAYER:
            self.state.apply_actions([actions[player] for player in self.possible_agents])
        else:
            (player,) = acting
            self.state.apply_action(actions[player])
        self._resolve_chance_nodes()
        rewards = {player: float(r) for player, r in enumerate(self.state.rewards())}
        done = self.state.is_terminal()
        # At the end every player sees its final observation (the runner and callbacks get it);
        # otherwise the players to move next.
        obs = self._observations(self.possible_agents if done else self._to_act())
        terminateds = {player: done for player in self.possible_agents}
        terminateds[ALL] = done
        truncateds = {player: False for player in self.possible_agents}
        truncateds[ALL] = False
        if done:
            self.agents = []
        return obs, rewards, terminateds, truncateds, {}

    def render(self) -> str | None:
        return None if self.state is None else str(self.state)

    def __str__(self) -> str:
        return f"<OpenSpielEnv {self.type.short_name}>"

    # -- helpers -----------------------------------------------------------------------------
    def _to_act(self) -> list[int]:
        if self.state.is_terminal():
            return []
        if self._simultaneous and self.state.current_player() == SIMULTANEOUS_PLAYER:
            return list(self.possible_agents)
        return [self.state.current_player()]

    def _check_action(self, player: int, action: Any) -> int:
        value = np.asarray(action)
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
            if value.ndim == 0 and np.issubdtype(value.dtype, np.floating) and float(value).is_integer():
                value = value.astype(np.int64)
            else:
                raise ValueError(
                    f"Player {player}'s action must be one integer in [0, {self._num_actions}), "
                    f"got {action!r}."
                )
        index = int(value)
        if not 0 <= index < self._num_actions:
            raise ValueError(
                f"Player {player}'s action {index} is outside the action space Discrete({self._num_actions})."
            )
        return index

    def _forfeit(self, illegal: dict[int, int]):
        """End the game: each offender gets ``illegal_action_reward``, everyone else 0."""
        rewards = {
            player: (self.illegal_action_reward if player in illegal else 0.0)
            for player in self.possible_agents
        }
        infos = {player: {"illegal_action": action} for player, action in illegal.items()}
        obs = self._observations(self.possible_agents, final=True)
        terminateds = {player: True for player in self.possible_agents}
        terminateds[ALL] = True
        truncateds = {player: False for player in self.possible_agents}
        truncateds[ALL] = False
        self.state = None  # the game did not end by its rules: no further step
        self.agents = []
        return obs, rewards, terminateds, truncateds, infos

    def _resolve_chance_nodes(self) -> None:
        while self.state.is_chance_node():
            outcomes, probs = zip(*self.state.chance_outcomes(), strict=True)
            probs = np.asarray(probs, dtype=np.float64)
            self.state.apply_action(int(outcomes[self._rng.choice(len(outcomes), p=probs / probs.sum())]))

    def _observations(self, players: list[int], final: bool = False) -> dict[int, Any]:
        return {player: self._observation(player, final) for player in players}

    def _observation(self, player: int, final: bool = False) -> Any:
        tensor = (
            self.state.observation_tensor(player)
            if self._observation_type == "observation"
            else self.state.information_state_tensor(player)
        )
        vector = np.asarray(tensor, dtype=np.float32).reshape(-1)
        if not self.action_mask:
            return vector
        mask = np.zeros(self._num_actions, dtype=np.int8)
        if not (final or self.state.is_terminal()):
            mask[self.state.legal_actions(player)] = 1
        return {"observation": vector, "action_mask": mask}
