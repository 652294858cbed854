"""Changing an algorithm's loss: subclass it and override one method.

    python examples/ppo_custom_loss.py

``PPO.compute_policy_loss(policy_id, batch)`` returns ``(loss, stats)`` for one policy's
minibatch; everything else (sampling, GAE, optimisation, logging of ``stats`` under
``learners/<policy>/...``) stays as it is. Here: PPO plus a penalty on the size of the policy's
logits, a simple regulariser against over-confident policies.
"""

from lightning_rl.algorithms.ppo import PPO, PPOConfig


class LogitPenaltyPPO(PPO):
    """PPO whose loss also penalises the mean squared policy logit."""

    def __init__(self, env=None, env_config=None, *, logit_penalty: float = 1e-3, **kwargs):
        super().__init__(env, env_config, **kwargs)

    def compute_policy_loss(self, policy_id, batch):
        loss, stats = super().compute_policy_loss(policy_id, batch)
        (logits,) = self.policies[policy_id].policy_net(batch["observation"])
        penalty = logits.pow(2).mean()
        stats["logit_penalty"] = penalty
        return loss + self.hparams.logit_penalty * penalty, stats


class LogitPenaltyPPOConfig(PPOConfig):
    algo_class = LogitPenaltyPPO


if __name__ == "__main__":
    algo = (
        LogitPenaltyPPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .training(
            train_batch_size=256,
            minibatch_size=256,
            num_epochs=10,
            lr=1e-3,
            gamma=0.98,
            lambda_=0.8,
            logit_penalty=1e-3,
        )
        .evaluation(evaluation_interval=5, evaluation_duration=10)
        .debugging(seed=0)
        .build_algo()
    )
    for _ in range(60):
        result = algo.train()
        if "evaluation" in result:
            learner = result["learners"]["default_policy"]
            print(
                result["training_iteration"],
                result["evaluation"]["episode_return_mean"],
                learner["logit_penalty"],
            )
    algo.stop()
