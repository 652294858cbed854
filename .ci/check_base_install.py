"""CI step: the project runs from a base install (``pip install -e .``, no extras).

Run with the python of a venv that holds torch and the project only. It

1. imports every module of ``lightning_rl``: a module may *need* an extra only when it is
   used, never when it is imported, so a runtime dependency missing from ``pyproject.toml``
   (pyarrow once was) fails here instead of on a user's first command;
2. checks that using an optional extra that is absent gives the one clear error naming it;
3. runs the README's main job for a few iterations through the installed ``lightning-rl``
   console script (a Ray EnvRunner actor, the shipped config).

Exit status 0 means the base install works; anything else prints what failed.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PPO_ITERATIONS = 3


def import_every_module() -> list[str]:
    import lightning_rl

    failures = []
    names = [lightning_rl.__name__]
    names += [m.name for m in pkgutil.walk_packages(lightning_rl.__path__, prefix="lightning_rl.")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failures.append(f"{name}:\n{traceback.format_exc()}")
    print(f"[base-install] imported {len(names) - len(failures)}/{len(names)} modules", flush=True)
    return failures


def missing_extra_is_named() -> list[str]:
    """Without the ``export`` extra, exporting names the extra (one clear error)."""
    from lightning_rl.errors import MissingExtraError
    from lightning_rl.optional import require

    if importlib.util.find_spec("onnxscript") is not None:
        return []  # the extra is installed after all: nothing to check here
    try:
        require("onnxscript", extra="export", purpose="ONNX export")
    except MissingExtraError as exc:
        if 'pip install "lightning-rl[export]"' not in str(exc):
            return [f"the missing-extra error does not name the extra: {exc}"]
        return []
    return ["require() did not raise for a missing package"]


def train_ppo_a_few_iterations() -> list[str]:
    executable = shutil.which("lightning-rl", path=str(Path(sys.executable).parent))
    if executable is None:
        return ["the lightning-rl console script is not installed next to this python"]
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [
            executable,
            "fit",
            "--config",
            str(REPO / "configs/ppo/cartpole.yaml"),
            "--trainer.max_epochs",
            str(PPO_ITERATIONS),
            "--trainer.enable_progress_bar",
            "false",
        ]
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return [f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"]
    print(f"[base-install] lightning-rl fit ran {PPO_ITERATIONS} iterations", flush=True)
    return []


def main() -> int:
    failures = import_every_module()
    failures += missing_extra_is_named()
    if not failures:
        failures += train_ppo_a_few_iterations()
    for failure in failures:
        print(f"[base-install] FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
