"""Checkpoints verify themselves: flipped bits, another algorithm's file, failed and killed
writes, and the step count of a run resumed after SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_rl import Policy
from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.dqn import DQN
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.atomic_checkpoint_io import AtomicCheckpointIO
from lightning_rl.callbacks import CheckpointOnInterrupt
from lightning_rl.errors import CheckpointError


def trainer_kwargs(root: Path, **extra) -> dict:
    return {
        "default_root_dir": str(root),
        "logger": False,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "limit_val_batches": 0,
        "plugins": [AtomicCheckpointIO()],
        **extra,
    }


def small_ppo() -> PPO:
    return PPO("CartPole-v1", train_batch_size=64, minibatch_size=32, num_epochs=1, seed=0)


@pytest.fixture(scope="module")
def ppo_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ppo")
    trainer = pl.Trainer(max_epochs=1, **trainer_kwargs(root))
    trainer.fit(small_ppo())
    path = root / "ppo.ckpt"
    trainer.save_checkpoint(path)
    return path


def tensor_data_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the stored tensor payloads (``archive/data/N`` zip members, uncompressed)."""
    ranges = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" not in info.filename or info.file_size == 0:
                continue
            assert info.compress_type == zipfile.ZIP_STORED
            raw.seek(info.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", raw.read(4))
            start = info.header_offset + 30 + name_length + extra_length
            ranges.append((start, start + info.file_size))
    return ranges


def test_forty_flipped_bits_inside_tensor_data_are_all_caught(ppo_checkpoint, tmp_path):
    data = ppo_checkpoint.read_bytes()
    ranges = tensor_data_ranges(ppo_checkpoint)
    assert len(ranges) > 10, "weights, optimizer moments, rng states"
    rng = random.Random(18)
    for flip in range(40):
        start, end = rng.choice(ranges)
        offset, bit = rng.randrange(start, end), rng.randrange(8)
        corrupt = bytearray(data)
        corrupt[offset] ^= 1 << bit
        path = tmp_path / f"flip{flip}.ckpt"
        path.write_bytes(bytes(corrupt))
        with pytest.raises(CheckpointError, match=r"corrupt.*checksum"):
            ckpt.load_checkpoint(path)
    # The same check guards every loader, Lightning's own resume included.
    with pytest.raises(CheckpointError, match=r"corrupt.*checksum"):
        Policy.from_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"corrupt.*checksum"):
        pl.Trainer(max_epochs=2, **trainer_kwargs(tmp_path)).fit(small_ppo(), ckpt_path=path)
    assert ckpt.load_checkpoint(ppo_checkpoint)["lightning_rl"]["format_version"] == ckpt.FORMAT_VERSION


def test_another_algorithms_checkpoint_names_both_algorithms(tmp_path):
    dqn = DQN(
        "CartPole-v1",
        train_batch_size=32,
        num_steps_sampled_before_learning_starts=32,
        rollout_fragment_length=32,
        seed=0,
    )
    trainer = pl.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(dqn)
    path = tmp_path / "dqn.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"is a DQN checkpoint.*PPO"):
        PPO.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"is a DQN checkpoint.*PPO"):
        pl.Trainer(max_epochs=2, **trainer_kwargs(tmp_path)).fit(small_ppo(), ckpt_path=path)


WRITER = textwrap.dedent(
    """
    import json, resource, signal, sys, torch
    from lightning_rl.atomic_checkpoint_io import AtomicCheckpointIO
    from lightning_rl.errors import CheckpointError

    path, limit = sys.argv[1], int(sys.argv[2])
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(16)}, path)  # the previous, good checkpoint
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        io.save_checkpoint({"weights": torch.zeros(1_000_000)}, path)
        print(json.dumps({"error": None}))
    except CheckpointError as exc:
        print(json.dumps({"error": str(exc)}))
    """
)


def test_a_failed_write_names_the_path_and_the_reason_and_keeps_the_previous_checkpoint(tmp_path):
    """A real write failure from the OS (a file-size limit: EFBIG, the same path as ENOSPC)."""
    path = tmp_path / "model.ckpt"
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(path), str(200_000)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert error is not None, "the oversized write succeeded"
    assert str(path) in error and "EFBIG" in error and "previous checkpoint" in error, error
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(path)["weights"], torch.ones(16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"], "no temporary file is left"


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from lightning_rl.atomic_checkpoint_io import AtomicCheckpointIO

    class Slow:  # pickling it blocks, so the save is caught half-way
        def __reduce__(self):
            time.sleep(600)

    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(4), "slow": Slow()}, sys.argv[1])
    """
)


def test_temporary_files_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "model.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)])
    stale = tmp_path / f".model.ckpt.tmp-{proc.pid}"
    try:
        deadline = time.monotonic() + 120
        while not stale.exists():
            assert proc.poll() is None, "the writer ended before it began writing"
            assert time.monotonic() < deadline, "the writer never started its save"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert stale.exists(), "the killed save left its temporary file"
    live = tmp_path / f".other.ckpt.tmp-{os.getpid()}"  # a save in progress in a live process
    live.write_bytes(b"partial")
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(4)}, path)
    assert not stale.exists(), "the stale temporary file was not removed"
    assert live.exists(), "a live process's save must not be disturbed"
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(path)["weights"], torch.ones(4))


class SigtermDuring(pl.Callback):
    """Sends this process SIGTERM after the first minibatch of iteration ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_resumed_after_sigterm_counts_every_step_once(tmp_path, ray_session):
    # With a Ray driver in the process (ray_session), as in every run with Ray runners: Ray's
    # SIGTERM handler (sys.exit at once) must not cut Lightning's stop after the step short.
    interrupt = CheckpointOnInterrupt(dirpath=str(tmp_path))
    algo = small_ppo()
    trainer = pl.Trainer(
        max_epochs=5, callbacks=[interrupt, SigtermDuring(epoch=2)], **trainer_kwargs(tmp_path)
    )
    with pytest.raises(SIGTERMException):
        trainer.fit(algo)
    assert interrupt.saved_path is not None
    saved = torch.load(interrupt.saved_path, weights_only=True)
    # PPO trains a whole iteration in one step, and Lightning stops after the step: iteration 2's
    # updates were done, so three iterations are complete and the resumed run goes on from there.
    assert saved["OnPolicyDataModule"]["num_env_steps_sampled_lifetime"] == 3 * 64, (
        "three iterations were complete when the signal was handled"
    )
    resumed = small_ppo()
    trainer = pl.Trainer(max_epochs=5, **trainer_kwargs(tmp_path))
    trainer.fit(resumed, ckpt_path=interrupt.saved_path)
    assert trainer.current_epoch == 5
    assert resumed.num_env_steps_sampled_lifetime == 5 * 64
