"""Behaviour cloning: maximise the log-likelihood of the recorded actions (RLlib's BC).

As in RLlib, BC is MARWIL with ``beta = 0``: every recorded action weighted equally. The
policy network is PPO's ``PolicyNet``, so ``ppo.load_policy_weights_from(bc)`` starts PPO from
the cloned policy (``examples/bc_then_ppo.py``). With ``vf_coeff > 0`` BC also fits a value
function to the data's returns (the policy loss is unchanged): a PPO started from it then has
a trained critic too, and its first updates keep the cloned return instead of following the
noisy advantages of an untrained critic. Measured on CartPole (BC return 484-493, first PPO
evaluation after one iteration, 4 seeds): 406-481 without a critic at PPO's lr 1e-3; with
``vf_coeff=1``, 370-497 at lr 1e-3 and 465-494 at the fine-tuning lr 3e-4.
"""

from __future__ import annotations

from typing import Any

from lightning_rl.algorithms.marwil.marwil import MARWIL
from lightning_rl.errors import ConfigError


class BC(MARWIL):
    """Behaviour cloning from offline data (MARWIL with ``beta = 0``).

    Args:
        bc_logstd_coeff: weight of the mean log std added to the log-likelihood (continuous
            actions): keeps the cloned policy from collapsing its spread.
        vf_coeff: > 0 also trains a value function on the data's discounted returns, with this
            weight (for algorithms started from the clone; BC's policy does not use it).
        grad_clip: gradient clip (None: off), applied as MARWIL's ``grad_clip_by`` says (RLlib's
            default ``"global_norm"``).

    See :class:`~lightning_rl.algorithms.offline.OfflineAlgorithm` for the data settings.
    """

    def __init__(
        self,
        env: Any = None,
        env_config: dict | None = None,
        *,
        lr: float = 1e-4,
        bc_logstd_coeff: float = 0.0,
        vf_coeff: float = 0.0,
        grad_clip: float | None = None,
        beta: float = 0.0,
        **kwargs: Any,
    ) -> None:
        # Declared (not read from **kwargs) so that signatures, the CLI and BCConfig().beta show
        # BC's 0 rather than MARWIL's default.
        if beta != 0.0:
            raise ConfigError(
                f"BC is MARWIL with beta=0, got beta={beta!r}; use MARWIL to weight by advantages."
            )
        super().__init__(
            env,
            env_config,
            beta=0.0,
            lr=lr,
            bc_logstd_coeff=bc_logstd_coeff,
            vf_coeff=vf_coeff,
            grad_clip=grad_clip,
            **kwargs,
        )

    def fits_value_function(self) -> bool:
        return float(self.hparams.vf_coeff) > 0.0
