"""Plain Lightning: an algorithm is a LightningModule, so a Trainer trains it.

    python examples/train_with_trainer.py

No fluent config, no CLI: build PPO with its hyperparameters, pick Lightning callbacks and a
logger, and call ``trainer.fit``. The algorithm builds its own DataModule (EnvRunners in this
process, since num_env_runners=0); pass ``datamodule=OnPolicyDataModule(...)`` to override.
"""

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn

pl.seed_everything(0)
algo = PPO(
    "CartPole-v1",
    num_env_runners=0,
    num_envs_per_env_runner=8,
    train_batch_size=256,
    minibatch_size=256,
    num_epochs=20,
    lr=1e-3,
    gamma=0.98,
    lambda_=0.8,
    evaluation_duration=20,
    seed=0,
)
trainer = pl.Trainer(
    max_epochs=500,  # one epoch = one training iteration
    check_val_every_n_epoch=5,  # evaluation = Lightning's validation loop
    num_sanity_val_steps=0,
    logger=CSVLogger("lightning_logs", name="ppo_cartpole"),
    callbacks=[
        StopOnReturn(475),  # evaluation/episode_return_mean
        StopOnEnvSteps(100_000),
        ModelCheckpoint(save_on_train_epoch_end=True),
    ],
)
trainer.fit(algo)
print("evaluation return:", float(trainer.callback_metrics["evaluation/episode_return_mean"]))
print("env steps sampled:", algo.num_env_steps_sampled_lifetime)
