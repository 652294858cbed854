"""What an EnvRunner process has to import: the sampling code, not the learner's stack.

A Ray EnvRunner actor imports whatever its class, its spec and the policy state pull in when
they are unpickled. Each heavy package there is paid once per runner in start-up time and
memory: ``tensordict`` alone loads ``torch._dynamo`` (about 1 s and 70 MB a process), and the
learner side (Lightning, torchrl, the algorithms, the DataModules) several hundred MB more.

The check runs in a fresh interpreter, which receives the spec and the policy state exactly as
a Ray actor does (cloudpickled by the driver) and samples with them, so the answer does not
depend on which Ray worker processes earlier tests left behind.
"""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import pytest

from lightning_rl.algorithms.dqn import DQN
from lightning_rl.algorithms.ppo import PPO

# Packages only the driver (learner, DataModules, trainer) needs.
LEARNER_ONLY = (
    "lightning",
    "lightning.pytorch",
    "tensordict",
    "torchrl",
    "torch._dynamo",
    "pandas",
    "lightning_rl.algorithms",
    "lightning_rl.data",
    "lightning_rl.training_run",
)

RUNNER_SCRIPT = """
import sys
import cloudpickle
from lightning_rl.env_runners.env_runner import EnvRunner

spec, state = cloudpickle.loads(sys.stdin.buffer.read())
runner = EnvRunner(spec, 1, False)
result = runner.sample(16, True, state)
assert result is not None
runner.stop()
print(",".join(name for name in sys.argv[1:] if name in sys.modules))
"""


@pytest.mark.parametrize("algorithm", [PPO, DQN], ids=["ppo", "dqn"])
def test_a_runner_samples_without_importing_the_learner_stack(algorithm) -> None:
    algo = algorithm("CartPole-v1", seed=0)
    payload = cloudpickle.dumps((algo.env_runner_spec(num_envs=2), algo.policy_state()))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER_SCRIPT, *LEARNER_ONLY],
        input=payload,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    imported = [name for name in done.stdout.decode().strip().split(",") if name]
    assert imported == [], f"an EnvRunner process imported {imported}"
