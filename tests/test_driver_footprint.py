"""What a training run imports: only what it uses.

pyarrow (~40 ms and ~29 MB a process) is a base dependency, but only runs that record
(``output=``) or read (``input_=``) Parquet call it, so the offline modules import it on first
use (:mod:`lightning_rl.offline.arrow`). Each check runs in a fresh interpreter, so modules
earlier tests imported do not hide an import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIT_SCRIPT = """
import sys
import lightning.pytorch as pl
from lightning_rl.algorithms.ppo import PPO

output = sys.argv[1] or None
algo = PPO("CartPole-v1", seed=0, train_batch_size=64, minibatch_size=64, num_epochs=1, output=output)
trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(algo)
print("PYARROW", "pyarrow" in sys.modules)
"""


def run_fresh(code: str, *args: str) -> str:
    """stdout of ``code`` run in a new interpreter (which must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_run_without_offline_data_does_not_import_pyarrow():
    assert "PYARROW False" in run_fresh(FIT_SCRIPT, "")


def test_a_recording_run_imports_pyarrow_when_it_writes(tmp_path: Path):
    out = run_fresh(FIT_SCRIPT, str(tmp_path / "episodes"))
    assert "PYARROW True" in out
    assert list((tmp_path / "episodes").rglob("*.parquet")), "no Parquet file was written"


def test_a_module_on_first_use_imports_at_its_first_name_only():
    code = (
        "import sys\n"
        "from lightning_rl._imports import ModuleOnFirstUse\n"
        "minidom = ModuleOnFirstUse('xml.dom.minidom')\n"
        "print('BEFORE', 'xml.dom.minidom' in sys.modules)\n"
        "print('PARSED', minidom.parseString('<a/>').documentElement.tagName)\n"
        "print('AFTER', 'xml.dom.minidom' in sys.modules)\n"
    )
    out = run_fresh(code)
    assert out.split() == ["BEFORE", "False", "PARSED", "a", "AFTER", "True"], out
