"""Error types with one clear message each.

Every user mistake (unknown name, wrong space, bad hyperparameter, broken env or plugin,
corrupt checkpoint) surfaces as one of these, so callers can catch a family and users see
the bad value next to the valid choices instead of a stack trace from deep inside a library.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LightningRLError(Exception):
    """Base class of every error raised on purpose by lightning-rl."""


class ConfigError(LightningRLError, ValueError):
    """A configuration value is invalid (bad hyperparameter, unknown option)."""


class UnknownNameError(ConfigError, KeyError):
    """A name (algorithm, env, connector, config key) is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class PluginError(LightningRLError):
    """A plugin distribution is broken: it fails to import or clashes with another one."""


class SpaceError(ConfigError):
    """A space does not fit the component it is given to (connector, network, algorithm)."""


class EnvError(LightningRLError):
    """An environment raised while being created, reset or stepped."""


class CheckpointError(LightningRLError):
    """A checkpoint is missing, truncated, corrupt or from an incompatible format."""


class NonFiniteError(LightningRLError, FloatingPointError):
    """Training stopped: a policy's loss or gradients stayed non-finite (NaN/inf) update after update."""


class MissingExtraError(LightningRLError, ImportError):
    """A feature needs a package of an optional extra that is not installed.

    An ``ImportError`` too, so code that already guards an optional import keeps working;
    the message names the extra to install instead of a module deep inside a library.
    """


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` choices close to ``name`` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    # Prefix matches help with versioned ids ("CartPole" -> "CartPole-v1").
    prefix = [c for c in choices if c.lower().startswith(name.lower()) and c.lower() not in hits]
    return [lowered[h] for h in hits] + prefix[: max(0, n - len(hits))]


def unknown_name_message(kind: str, name: str, choices: Iterable[str], limit: int = 40) -> str:
    """``Unknown <kind> 'name'. Did you mean ...? Choices: ...`` in one place for all lookups."""
    choices = sorted(set(choices), key=str.lower)
    message = f"Unknown {kind} {name!r}."
    matches = close_matches(name, choices)
    if matches:
        message += " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
    shown = ", ".join(choices[:limit])
    more = f", ... ({len(choices) - limit} more)" if len(choices) > limit else ""
    message += f" Choices: {shown}{more}."
    return message
