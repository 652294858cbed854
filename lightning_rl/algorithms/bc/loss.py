"""BC's objective: MARWIL's with ``beta = 0`` (every recorded action weighted equally).

Written out in :mod:`lightning_rl.algorithms.marwil.loss`::

    log_lik     = log pi(a | s) + bc_logstd_coeff * mean(log std)   (continuous actions)
    policy_loss = -mean(log_lik)                                     (behaviour_cloning_loss)

With ``vf_coeff > 0`` BC also fits a critic to the data's returns, ``vf_coeff * 0.5 *
mean(A^2)`` (:func:`marwil_loss` with unit weights), which leaves the policy loss unchanged.
"""

from lightning_rl.algorithms.marwil.loss import (
    MARWIL_KEYS as BC_KEYS,
)
from lightning_rl.algorithms.marwil.loss import (
    MARWILLossConfig,
    behaviour_cloning_loss,
    log_likelihood,
    marwil_loss,
)

__all__ = ["BC_KEYS", "MARWILLossConfig", "behaviour_cloning_loss", "log_likelihood", "marwil_loss"]
