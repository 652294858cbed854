"""lightning-rl: reinforcement learning the Lightning way.

Algorithms are LightningModules, experience comes from TensorDict DataModules backed by Ray
EnvRunners, and plugins extend everything through entry points. Attributes are imported
lazily: ``import lightning_rl`` stays cheap, and an EnvRunner actor that only needs
``lightning_rl.env_runners`` never pays for Lightning's import.
"""

from __future__ import annotations

from lightning_rl._imports import lazy_exports
from lightning_rl.version import __version__

_EXPORTS = {
    # algorithms and configs
    "Algorithm": "lightning_rl.algorithms.base",
    "PolicyModule": "lightning_rl.algorithms.policy_module",
    "DEFAULT_POLICY_ID": "lightning_rl.constants",
    "AlgorithmConfig": "lightning_rl.config.algorithm_config",
    "NotProvided": "lightning_rl.config.algorithm_config",
    "PPO": "lightning_rl.algorithms.ppo",
    "PPOConfig": "lightning_rl.algorithms.ppo",
    "IMPALA": "lightning_rl.algorithms.impala",
    "IMPALAConfig": "lightning_rl.algorithms.impala",
    "APPO": "lightning_rl.algorithms.appo",
    "APPOConfig": "lightning_rl.algorithms.appo",
    "DQN": "lightning_rl.algorithms.dqn",
    "DQNConfig": "lightning_rl.algorithms.dqn",
    "SAC": "lightning_rl.algorithms.sac",
    "SACConfig": "lightning_rl.algorithms.sac",
    "BC": "lightning_rl.algorithms.bc",
    "BCConfig": "lightning_rl.algorithms.bc",
    "MARWIL": "lightning_rl.algorithms.marwil",
    "MARWILConfig": "lightning_rl.algorithms.marwil",
    "CQL": "lightning_rl.algorithms.cql",
    "CQLConfig": "lightning_rl.algorithms.cql",
    "DreamerV3": "lightning_rl.algorithms.dreamerv3",
    "DreamerV3Config": "lightning_rl.algorithms.dreamerv3",
    "TrainingRun": "lightning_rl.training_run",
    "RayTrainRun": "lightning_rl.ray_learners",
    "RayLearnerSettings": "lightning_rl.ray_learners",
    # envs
    "MultiAgentEnv": "lightning_rl.envs.multi_agent",
    "PettingZooEnv": "lightning_rl.envs.wrappers.pettingzoo_env",
    "ParallelPettingZooEnv": "lightning_rl.envs.wrappers.pettingzoo_env",
    "OpenSpielEnv": "lightning_rl.envs.wrappers.open_spiel",
    "EnvContext": "lightning_rl.envs.registration",
    "make_env": "lightning_rl.envs.registration",
    "register_env": "lightning_rl.envs.registration",
    "make_atari": "lightning_rl.envs.atari",
    "ExternalEnvClient": "lightning_rl.envs.external.client",
    "ExternalEnvConfig": "lightning_rl.envs.external.config",
    "ExternalEnvRunner": "lightning_rl.external_server.runner",
    # runners and data
    "EnvRunner": "lightning_rl.env_runners.env_runner",
    "RLlibCallback": "lightning_rl.env_runners.rllib_callbacks",
    "MetricsLogger": "lightning_rl.env_runners.rllib_callbacks",
    "EnvRunnerGroup": "lightning_rl.env_runners.env_runner_group",
    "ExperienceDataModule": "lightning_rl.data.experience",
    "OnPolicyDataModule": "lightning_rl.data.on_policy",
    "AsyncDataModule": "lightning_rl.data.async_data",
    "ReplayDataModule": "lightning_rl.data.transition_replay",
    "OfflineDataModule": "lightning_rl.data.offline",
    "record_episodes": "lightning_rl.offline.record",
    # connectors
    "Connector": "lightning_rl.connectors.base",
    "EnvToModule": "lightning_rl.connectors.base",
    "ModuleToEnv": "lightning_rl.connectors.base",
    "FlattenObservations": "lightning_rl.connectors.env_to_module",
    "MeanStdFilter": "lightning_rl.connectors.env_to_module",
    "ClipActions": "lightning_rl.connectors.module_to_env",
    "UnsquashActions": "lightning_rl.connectors.module_to_env",
    "FrameStack": "lightning_rl.connectors.frame_stack",
    # modules
    "DefaultModelConfig": "lightning_rl.modules.model_config",
    "PolicySpec": "lightning_rl.modules.policy_networks",
    "InferencePolicy": "lightning_rl.modules.policy_networks",
    # RLlib's RLModule surface
    "RLModule": "lightning_rl.modules.rl_module",
    "TorchRLModule": "lightning_rl.modules.rl_module",
    "RLModuleSpec": "lightning_rl.modules.rl_module",
    "MultiRLModuleSpec": "lightning_rl.modules.rl_module",
    "MultiRLModule": "lightning_rl.modules.rl_module",
    "RandomRLModule": "lightning_rl.modules.rl_module",
    "ValueFunctionAPI": "lightning_rl.modules.rl_module",
    "Columns": "lightning_rl.modules.rl_module",
    "DefaultPPOTorchRLModule": "lightning_rl.modules.ppo_rl_module",
    "PPOTorchRLModule": "lightning_rl.modules.ppo_rl_module",
    # self-play
    "SelfPlayCallback": "lightning_rl.self_play",
    "LeagueCallback": "lightning_rl.self_play",
    "Matchmaking": "lightning_rl.self_play",
    # callbacks
    "StopOnEnvSteps": "lightning_rl.callbacks",
    "StopOnReturn": "lightning_rl.callbacks",
    "IterationCheckpoint": "lightning_rl.callbacks",
    "RLProgressBar": "lightning_rl.progress",
    "RecordEvaluationVideos": "lightning_rl.video",
    # inference, export, plots
    "Policy": "lightning_rl.policy",
    "export_policy": "lightning_rl.export",
    "plot_learning_curves": "lightning_rl.plotting",
    # registry
    "register_algorithm": "lightning_rl.registry",
    "register_connector": "lightning_rl.registry",
    "list_registered": "lightning_rl.registry",
    # errors
    "LightningRLError": "lightning_rl.errors",
    "ConfigError": "lightning_rl.errors",
    "UnknownNameError": "lightning_rl.errors",
    "PluginError": "lightning_rl.errors",
    "SpaceError": "lightning_rl.errors",
    "EnvError": "lightning_rl.errors",
    "CheckpointError": "lightning_rl.errors",
    "MissingExtraError": "lightning_rl.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
