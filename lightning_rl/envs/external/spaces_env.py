"""``ExternalSpaces``: an env that is only its spaces, for simulators that exist outside Python.

An algorithm needs the observation and action spaces to build its networks. When the only
simulator is an external client (a game engine, a C++ plant model), name the spaces in the
config instead of an env::

    PPO(env="ExternalSpaces",
        env_config={"observation_space": {"type": "Box", "shape": [4], "dtype": "float32",
                                          "low": "-inf", "high": "inf"},
                    "action_space": {"type": "Discrete", "n": 2}},
        external={"port": 9900})

The spaces use the protocol's JSON form (the one ``get_config`` returns). Stepping this env is
an error that says why: there is nothing to evaluate on locally.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from lightning_rl.errors import ConfigError, EnvError
from lightning_rl.serialization import NotPlainDataError, space_from_data


def _space(config: dict, key: str) -> gym.Space:
    value = config.get(key)
    if isinstance(value, gym.Space):
        return value
    if not isinstance(value, dict):
        raise ConfigError(
            f"ExternalSpaces needs env_config[{key!r}]: a space such as {{'type': 'Discrete', 'n': 2}}, "
            f"got {value!r}."
        )
    try:
        return space_from_data(dict(value))
    except (NotPlainDataError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"ExternalSpaces env_config[{key!r}] is not a valid space description: {exc}"
        ) from exc


class ExternalSpacesEnv(gym.Env):
    """Observation and action spaces from ``env_config``; no dynamics."""

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        self.observation_space = _space(config, "observation_space")
        self.action_space = _space(config, "action_space")

    def _no_dynamics(self) -> EnvError:
        return EnvError(
            "ExternalSpaces has no dynamics: its episodes run in external clients. Turn local evaluation "
            "off (evaluation_interval=None / limit_val_batches=0) or name a real env for it."
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        raise self._no_dynamics()

    def step(self, action: Any) -> Any:
        raise self._no_dynamics()
