"""Shared fixtures: one local Ray session for the whole run, offline wandb, quiet warnings."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import settings

from tests.training import quiet_trainer_kwargs_for

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")

RAY_TEST_CPUS = 4

# Property tests draw the same examples on every run (a suite that fails only on some runs
# helps nobody); HYPOTHESIS_PROFILE=explore draws fresh ones when hunting for new cases.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 4 logical CPUs, started once (starting Ray costs ~4 s)."""
    import ray

    if not ray.is_initialized():
        # address="local": never join a `ray start` cluster that happens to run on the machine.
        ray.init(address="local", num_cpus=RAY_TEST_CPUS, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Algorithm.setup pins the learner to its ``num_cpus_per_learner`` threads; later tests
    must not inherit that (results would depend on test order)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quiet_trainer_kwargs(tmp_path):
    """Trainer kwargs for tests: no progress bar, logs under tmp_path."""
    return quiet_trainer_kwargs_for(tmp_path)
