"""RLlib's ``framework(...)`` and ``debugging(log_level=...)`` keywords, checked at the door.

A ported RLlib script passes these; silently dropping them would let a user believe, say,
``torch_compile_learner=True`` took effect. So each keyword is one of three kinds:

* TensorFlow-only keywords (``eager_tracing``, ``tf_session_args``, ...) are accepted and have
  nothing to act on: this project runs PyTorch only, as does RLlib's new API stack.
* Torch keywords asking for something this project does not do (``torch.compile``, custom DDP
  kwargs) are accepted at their "off" value and refused otherwise, naming where the same thing
  is done here.
* Anything else is a typo and refused with the list of valid keywords.

``log_level`` sets the level of the ``lightning_rl`` logger in the driver process (RLlib's
sets its ``ray.rllib`` logger); Ray runner processes keep Ray's own logging configuration.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning_rl.errors import ConfigError, UnknownNameError, unknown_name_message

TENSORFLOW_ONLY = ("eager_tracing", "eager_max_retraces", "tf_session_args", "local_tf_session_args")

# Tune a compile that is refused when switched on, or ask for what is always done here
# (non-finite updates are always skipped: ``max_consecutive_non_finite_updates``): any value.
ACCEPTED_ANY = (
    "torch_compile_learner_what_to_compile",
    "torch_compile_learner_dynamo_backend",
    "torch_compile_learner_dynamo_mode",
    "torch_compile_worker_dynamo_backend",
    "torch_compile_worker_dynamo_mode",
    "torch_skip_nan_gradients",
)

# keyword -> (the values that mean "off", what to do here instead)
OFF_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "torch_compile_learner": ((False, None), "there is no torch.compile path; the learner runs eagerly"),
    "torch_compile_worker": ((False, None), "there is no torch.compile path; the runners act eagerly"),
    "torch_ddp_kwargs": (
        (None, {}),
        "Lightning runs DDP here; pass config.trainer(strategy=DDPStrategy(...)) instead",
    ),
}

FRAMEWORK_OPTIONS = (*TENSORFLOW_ONLY, *ACCEPTED_ANY, *OFF_ONLY)

LOG_LEVELS = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")


def check_framework_options(options: dict[str, Any]) -> None:
    """Refuse a ``framework()`` keyword that is unknown or asks for what is not done here."""
    for key, value in options.items():
        if key in TENSORFLOW_ONLY or key in ACCEPTED_ANY:
            continue
        if key not in OFF_ONLY:
            raise UnknownNameError(unknown_name_message("framework() setting", key, list(FRAMEWORK_OPTIONS)))
        off_values, instead = OFF_ONLY[key]
        if not any(value is off or value == off for off in off_values):
            raise ConfigError(f"framework({key}={value!r}) is not supported: {instead}.")


def resolve_log_level(value: Any) -> int:
    """RLlib's ``log_level`` string (``"WARN"``, ``"info"``, ...) as a :mod:`logging` level."""
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {list(LOG_LEVELS)}, got {value!r}.")
    name = value.upper()
    return logging.WARNING if name == "WARN" else getattr(logging, name)


def apply_log_level(level: int | None) -> None:
    """Set the project's logger level (None: leave logging as the user configured it)."""
    if level is not None:
        logging.getLogger("lightning_rl").setLevel(level)
