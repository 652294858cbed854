"""Port of RLlib's ``examples/offline_rl/train_w_bc_finetune_w_ppo.py``: BC, then PPO fine-tuning.

RLlib trains BC on its bundled CartPole dataset with a custom RLModule (``MyBCModel``) until the
evaluation return is 250, then builds PPO with a subclass that adds a value head
(``MyPPOModel``), loads the BC module's weights (``RLModuleSpec(load_state_path=...)`` and
``algo.restore_from_path(path, component="learner_group/learner/rl_module")``), checks the
return (>= 200 before and >= 250 after 5 PPO iterations) and fine-tunes to 450.

Changed besides the imports (see README.md): RLlib's dataset ``offline/tests/data/cartpole/
cartpole-v1_large`` is not on this machine, so ``--data-path`` (default
``runs/rllib_ports/cartpole-v1_large``) is recorded by ``cartpole_dataset.py`` from an expert
PPO when it does not exist yet (a few minutes, once); RLlib's catalog classes
``MLPEncoderConfig``/``MLPHeadConfig`` have no lightning-rl twin (plain torch layers instead);
the BC checkpoint is ``bc.save()``'s file (RLlib: Tune's best checkpoint directory), with
RLlib's component path appended as RLlib does for ``load_state_path`` and
``restore_from_path``; RLlib's Tune runs are plain ``train()`` loops (``_loop.py``).
``examples/bc_then_ppo.py`` does this job with lightning-rl's own API.

    python examples/rllib_ports/train_w_bc_finetune_w_ppo.py [--data-path DIR]
"""

from __future__ import annotations

from pathlib import Path

from _loop import build_algo, example_args, train_until
from cartpole_dataset import DEFAULT_PATH, ensure_dataset
from torch import nn

from lightning_rl import BCConfig, Columns, PPOConfig, RLModuleSpec, TorchRLModule, ValueFunctionAPI
from lightning_rl.checkpoint_components import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE
from lightning_rl.modules.rl_module import override

EVAL_RETURN = ("evaluation", "env_runners", "episode_return_mean")


class MyBCModel(TorchRLModule):
    """A BC-usable model that only computes action logits (CartPole: 4 inputs, 2 actions)."""

    @override(TorchRLModule)
    def setup(self):
        self._encoder = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self._pi = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))

    @override(TorchRLModule)
    def _forward_inference(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self._pi(self._encoder(batch[Columns.OBS]))}

    @override(TorchRLModule)
    def _forward_exploration(self, batch, **kwargs):
        return self._forward_inference(batch)

    @override(TorchRLModule)
    def _forward_train(self, batch, **kwargs):
        return self._forward_inference(batch)


class MyPPOModel(MyBCModel, ValueFunctionAPI):
    """The BC model plus a zero-initialised value head, so PPO can fine-tune it."""

    @override(MyBCModel)
    def setup(self):
        super().setup()
        self._vf = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
        for layer in self._vf:
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @override(MyBCModel)
    def _forward_train(self, batch, **kwargs):
        features = self._encoder(batch[Columns.OBS])
        return {
            Columns.ACTION_DIST_INPUTS: self._pi(features),
            Columns.VF_PREDS: self._vf(features).squeeze(-1),
        }

    @override(ValueFunctionAPI)
    def compute_values(self, batch, embeddings=None):
        if embeddings is None:
            embeddings = self._encoder(batch[Columns.OBS])
        return self._vf(embeddings).squeeze(-1)


def extra(parser) -> None:
    parser.add_argument("--data-path", default=str(DEFAULT_PATH))
    parser.add_argument("--seed", type=int, default=42)


def main(argv=None) -> dict:
    args = example_args(
        default_iters=10_000, default_timesteps=10_000_000, default_reward=250.0, argv=argv, extra=extra
    )
    data_path = ensure_dataset(args.data_path)  # RLlib's bundled dataset, recorded here once
    base_config = (
        BCConfig()
        .environment("CartPole-v1")
        .offline_data(input_=[data_path.as_posix()], dataset_num_iters_per_learner=1)
        .training(train_batch_size_per_learner=1024, lr=0.0008)
        .debugging(seed=args.seed)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=MyBCModel))
        .evaluation(
            evaluation_interval=3,
            evaluation_num_env_runners=1,
            evaluation_duration=5,
            evaluation_parallel_to_training=True,
            evaluation_config={"explore": False},
        )
    )
    bc = build_algo(base_config, args)
    bc_summary = train_until(bc, "train_w_bc", args, reward_key=EVAL_RETURN, stop_algo=False)
    checkpoint = bc.save()  # RLlib: Tune's best checkpoint (a directory)
    bc.stop()
    rl_module_checkpoint = (
        Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
    )

    ppo_config = (
        PPOConfig()
        .environment("CartPole-v1")
        .training(lr=0.00002, num_epochs=6, vf_loss_coeff=0.01)
        .debugging(seed=args.seed)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=MyPPOModel, load_state_path=rl_module_checkpoint))
        .evaluation(
            evaluation_interval=1,
            evaluation_num_env_runners=1,
            evaluation_duration=5,
            evaluation_parallel_to_training=True,
            evaluation_config={"explore": False},
        )
    )
    ppo = build_algo(ppo_config, args)
    ppo.restore_from_path(
        rl_module_checkpoint,
        component=f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}",
    )
    R = ppo.evaluate()["env_runners"]["episode_return_mean"]
    assert R >= 200.0, f"Initial PPO performance bad! R={R} (expected 200.0+)."
    print(f"PPO return after initialization: {R}")
    for _ in range(5):
        ppo.train()
    R = ppo.evaluate()["env_runners"]["episode_return_mean"]
    assert R >= 250.0, f"PPO performance (training) bad! R={R} (expected 250.0+)."
    print(f"PPO return after 5x training: {R}")
    ppo.stop()
    # RLlib's last step: a fresh PPO from the same config (BC's weights via load_state_path) to 450.
    args.stop_reward = 450.0
    return {"bc": bc_summary, "ppo": train_until(ppo_config, "finetune_w_ppo", args, reward_key=EVAL_RETURN)}


if __name__ == "__main__":
    main()
