"""Self-play on TicTacToe: PPO learns against a random player and frozen snapshots of itself.

    python examples/self_play.py [--league]

The policy ``main`` starts against ``random`` (a built-in policy that plays uniformly among
legal moves); each time it wins often enough, SelfPlayCallback freezes a copy of it as a new
opponent. ``--league`` adds a main exploiter that trains only against ``main`` (LeagueCallback).
Action masks keep every sampled move legal. At the end, 200 games against ``random``.
"""

import argparse

import lightning.pytorch as pl

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.envs.classes import TicTacToe
from lightning_rl.self_play import LeagueCallback, Matchmaking, SelfPlayCallback, play_matches

parser = argparse.ArgumentParser()
parser.add_argument("--league", action="store_true")
parser.add_argument("--iterations", type=int, default=150)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

pl.seed_everything(args.seed)
agents = ["player_0", "player_1"]
policies = {"main": None, "random": "random"}
if args.league:
    policies["main_exploiter"] = None
callback_class = LeagueCallback if args.league else SelfPlayCallback
callback = callback_class(
    main_policy="main", agents=agents, base_opponents=["random"], win_rate_threshold=0.85
)
algo = PPO(
    TicTacToe,
    policies=policies,
    policy_mapping_fn=Matchmaking([("main", ["random"])], agents),  # the callback takes over
    num_envs_per_env_runner=16,
    train_batch_size=2048,
    minibatch_size=512,
    num_epochs=8,
    lr=3e-3,
    gamma=0.99,
    lambda_=0.95,
    model_config={"fcnet_hiddens": [128, 128]},
    evaluation_duration=50,
    seed=args.seed,
)
trainer = pl.Trainer(
    max_epochs=args.iterations,
    check_val_every_n_epoch=10,
    callbacks=[callback],
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    num_sanity_val_steps=0,
)
trainer.fit(algo)
print("snapshots:", callback.snapshots, getattr(callback, "exploiter_snapshots", []))
print("main vs random over 200 games:", play_matches(algo, "main", "random", num_games=200, agents=agents))
