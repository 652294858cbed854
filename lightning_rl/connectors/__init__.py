"""Connectors: composable pieces on the env->module, module->env and learner seams."""

from lightning_rl.connectors.base import (
    Connector,
    ConnectorPipeline,
    EnvToModule,
    EnvToModulePipeline,
    ModuleToEnv,
    ModuleToEnvPipeline,
    build_connector,
    connector_spec,
    normalize_connector_specs,
)
from lightning_rl.connectors.env_to_module import FlattenObservations, MeanStdFilter, PrevActionsPrevRewards
from lightning_rl.connectors.frame_stack import FrameStack
from lightning_rl.connectors.module_to_env import ClipActions, UnsquashActions

__all__ = [
    "ClipActions",
    "Connector",
    "ConnectorPipeline",
    "EnvToModule",
    "EnvToModulePipeline",
    "FlattenObservations",
    "FrameStack",
    "MeanStdFilter",
    "PrevActionsPrevRewards",
    "ModuleToEnv",
    "ModuleToEnvPipeline",
    "UnsquashActions",
    "build_connector",
    "connector_spec",
    "normalize_connector_specs",
]
