"""Shared measuring pieces of the time-to-target benchmarks.

Every benchmark reports two criteria the same way:

1. ``reached`` / ``seconds_to_target`` / ``env_steps_to_target``: the first evaluation whose
   deterministic mean return over >= 20 episodes reaches the target;
2. ``reached_rolling`` / ``seconds_to_rolling`` / ``env_steps_to_rolling``: the first iteration
   after which the mean return of the last 100 training episodes reaches the rolling target
   (RLlib's stopping criterion; only counted once 100 episodes have finished).

Seconds are process wall time since the process started (imports and start-up included),
taken from the OS's process start time, so nothing before ``main()`` is hidden. The one thing
taken out of the two criteria's seconds is the benchmark's own memory sampling
(:meth:`PhaseTimer.sample_pss`, 0.4-0.7 s a run with Ray's processes to read): a user's run
does not pay it, and the peer library it is compared with is not measured that way.

:func:`emit` also appends the result, with the command, the date, the machine (CPU model,
cores, torch) and the load on it, as one line of ``benchmarks/results/<script>.json``:
``benchmarks/report.py`` builds the README's table from those files only, so a figure there
always names its run. ``LIGHTNING_RL_BENCHMARK_RESULTS`` moves that folder (empty: save nothing).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

PROCESS_START = psutil.Process().create_time()
LOAD_AT_START = os.getloadavg()[0]
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def seconds_since_start() -> float:
    return time.time() - PROCESS_START


# Seconds this process spent sampling memory for the benchmark (PhaseTimer.sample_pss).
_measuring_seconds = 0.0


def run_seconds() -> float:
    """Seconds since the process started, less the benchmark's own memory sampling."""
    return seconds_since_start() - _measuring_seconds


def peak_rss_mb() -> float:
    """Peak resident memory of this (driver) process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What a figure depends on besides the code: CPU, cores, accelerator, library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "slow_import_extras": slow_import_extras(),
    }


# Installed, these make every `import lightning` slower: torchmetrics imports them whenever they
# are there (scipy.signal ~0.9 s, matplotlib ~0.45 s here). The dev extras bring them, the
# documented benchmark venv (`pip install -e ".[bench]"`) does not.
SLOW_IMPORT_EXTRAS = ("scipy", "matplotlib")


def slow_import_extras() -> list[str]:
    """The :data:`SLOW_IMPORT_EXTRAS` installed in this environment (start-up figures depend on it)."""
    return [name for name in SLOW_IMPORT_EXTRAS if importlib.util.find_spec(name) is not None]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=RESULTS_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def record(result: dict[str, Any]) -> dict[str, Any]:
    """The result with what it was measured on, when, and by which command."""
    script = Path(sys.argv[0])
    return {
        "benchmark": script.name,
        "command": shlex.join(["python", f"benchmarks/{script.name}", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "machine": machine(),
        # 1-minute load averages: above the core count, other work shared the cores and
        # the figure is a bound (slower than the machine alone would be).
        "load_1m_start": round(LOAD_AT_START, 2),
        "load_1m_end": round(os.getloadavg()[0], 2),
        "result": result,
    }


def save(result: dict[str, Any]) -> Path | None:
    """Append the result's :func:`record` to ``results/<script>.json`` (one JSON object a line)."""
    folder = os.environ.get("LIGHTNING_RL_BENCHMARK_RESULTS", str(RESULTS_DIR))
    if not folder:
        return None
    path = Path(folder) / f"{Path(sys.argv[0]).stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(record(result), sort_keys=True) + "\n")
    return path


def emit(result: dict[str, Any]) -> None:
    """Save the result (see :func:`save`); the last line of stdout is its one JSON object."""
    save(result)
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True), flush=True)


class TimeToTarget(pl.Callback):
    """Records when each criterion is first met; stops training once both are (or at a cap)."""

    def __init__(
        self, eval_target: float, rolling_target: float, max_env_steps: int, window: int = 100
    ) -> None:
        self.eval_target = eval_target
        self.rolling_target = rolling_target
        self.max_env_steps = max_env_steps
        self.window = window
        self.reached_eval: tuple[float, int] | None = None
        self.reached_rolling: tuple[float, int] | None = None
        self.startup_seconds: float | None = None
        self.last_eval_return: float | None = None
        self.learner_device: str | None = None
        self.eval_seconds = 0.0
        self._eval_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.startup_seconds = seconds_since_start()
        # Where the learner ran (the Trainer's accelerator is "auto"): a GPU run says cuda:0.
        self.learner_device = str(pl_module.device)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.eval_seconds += time.perf_counter() - self._eval_start
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("evaluation/episode_return_mean")
        if value is None:
            return
        self.last_eval_return = float(value)
        if self.reached_eval is None and self.last_eval_return >= self.eval_target:
            self.reached_eval = (run_seconds(), pl_module.num_env_steps_sampled_lifetime)
            # Criterion 1 is recorded; further evaluations would only add wall time to criterion 2.
            trainer.check_val_every_n_epoch = 10**9
        self._maybe_stop(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        experience = pl_module.experience
        rolling = trainer.callback_metrics.get("env_runners/episode_return_mean")
        full_window = experience.num_episodes_lifetime >= self.window
        if (
            self.reached_rolling is None
            and full_window
            and rolling is not None
            and float(rolling) >= self.rolling_target
        ):
            self.reached_rolling = (run_seconds(), pl_module.num_env_steps_sampled_lifetime)
        self._maybe_stop(trainer, pl_module)

    def _maybe_stop(self, trainer: pl.Trainer, pl_module: Any) -> None:
        both = self.reached_eval is not None and self.reached_rolling is not None
        if both or pl_module.num_env_steps_sampled_lifetime >= self.max_env_steps:
            trainer.should_stop = True

    def results(self) -> dict[str, Any]:
        eval_hit, rolling_hit = self.reached_eval, self.reached_rolling
        return {
            "reached": eval_hit is not None,
            "seconds_to_target": round(eval_hit[0], 3) if eval_hit else None,
            "env_steps_to_target": eval_hit[1] if eval_hit else None,
            "reached_rolling": rolling_hit is not None,
            "seconds_to_rolling": round(rolling_hit[0], 3) if rolling_hit else None,
            "env_steps_to_rolling": rolling_hit[1] if rolling_hit else None,
            "startup_seconds": round(self.startup_seconds, 3) if self.startup_seconds is not None else None,
            "final_eval_return": self.last_eval_return,
            "evaluation_seconds": round(self.eval_seconds, 3),
            "learner_device": self.learner_device,
        }


def process_tree_pss_mb(pid: int | None = None) -> tuple[float, int]:
    """Summed proportional set size (PSS, MiB) of a process and all its descendants, and how many.

    PSS splits each shared page between the processes that map it, so the sum over the tree is
    the memory the whole run holds (RSS would count torch's and Ray's shared libraries once per
    process). Read from ``/proc/<pid>/smaps_rollup``; processes that exit meanwhile are skipped.
    """
    root = psutil.Process(pid)
    total_kb, count = 0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            text = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total_kb += int(line.split()[1])
                count += 1
                break
    return total_kb / 1024.0, count


class PhaseTimer(pl.Callback):
    """Where a fit's wall time goes, measured from the benchmark side with Lightning hooks.

    Phases (seconds): ``setup`` (the Trainer's setup hooks to the first training hook: the
    algorithm's DataModule starts Ray and its runners there, optimizers are configured),
    ``rollout_processing`` (each iteration's start to its first minibatch, minus the sampling in
    between: the dataloader's post-processing such as GAE), ``updates`` (every minibatch from
    ``on_train_batch_start`` to ``on_train_batch_end``: the algorithm's ``training_step``,
    backward, clipping and Lightning's optimizer and scheduler steps), ``between_updates`` (the
    rest of the iteration: fetching the next minibatch, the end-of-iteration hooks and metric
    flushing), ``shutdown`` (the end of training to the end of ``fit``: runners stopped).
    The first sample is read from the DataModule's own sampling clock at the first minibatch.
    ``pss_every`` iterations it also sums the PSS of this process and all its descendants
    (Ray's processes included) and keeps the peak.
    """

    def __init__(self, pss_every: int = 10, timed: list[Any] | None = None) -> None:
        self.pss_every = pss_every
        # Objects with their own ``seconds`` (a timed logger, a timed checkpoint callback): their
        # totals are read at setup, at the start and at the end of training, so that each phase
        # can leave out what they spent inside it.
        self.timed = [t for t in timed or [] if t]
        self.timed_at: dict[str, float] = {}
        self.setup_start: float | None = None
        self.train_start: float | None = None
        self.train_end: float | None = None
        self.first_sample_seconds: float | None = None
        self.process_start_to_first_sample: float | None = None
        self.rollout_processing = 0.0
        self.updates = 0.0
        self.num_updates = 0
        self.iterations_seconds = 0.0
        self.pss_seconds = 0.0
        self.pss_seconds_in_iterations = 0.0
        self.pss_seconds_at_end = 0.0
        self.peak_pss_mb = 0.0
        self.peak_pss_processes = 0
        self._epoch_start = 0.0
        self._sampling_at_epoch_start = 0.0
        self._first_batch_of_epoch = True
        self._batch_start = 0.0

    def timed_seconds(self) -> float:
        return sum(t.seconds for t in self.timed)

    def setup(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        self.setup_start = time.perf_counter()
        self.timed_at["setup"] = self.timed_seconds()

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.train_start = time.perf_counter()
        self.timed_at["train_start"] = self.timed_seconds()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        now = time.perf_counter()
        if self._epoch_start:
            # One iteration runs to the next one's start: the logger's epoch-end write and the
            # checkpoint callbacks' epoch-end hooks run after every on_train_epoch_end of ours.
            self.iterations_seconds += now - self._epoch_start
        self._epoch_start = now
        self._sampling_at_epoch_start = pl_module.experience.sampling_seconds_lifetime
        self._first_batch_of_epoch = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._first_batch_of_epoch:
            self._first_batch_of_epoch = False
            sampled = pl_module.experience.sampling_seconds_lifetime - self._sampling_at_epoch_start
            self.rollout_processing += now - self._epoch_start - sampled
            if self.first_sample_seconds is None:
                self.first_sample_seconds = pl_module.experience.sampling_seconds_lifetime
                self.process_start_to_first_sample = seconds_since_start() - (time.perf_counter() - now)
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.updates += time.perf_counter() - self._batch_start
        self.num_updates += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.pss_every and trainer.current_epoch % self.pss_every == 0:
            self.pss_seconds_in_iterations += self.sample_pss()

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.train_end = time.perf_counter()
        self.timed_at["train_end"] = self.timed_seconds()
        if self._epoch_start:
            self.iterations_seconds += self.train_end - self._epoch_start
        self.pss_seconds_at_end = self.sample_pss()

    def sample_pss(self) -> float:
        """Sample the process tree's PSS; returns the seconds it took (taken out of :func:`run_seconds`)."""
        global _measuring_seconds
        start = time.perf_counter()
        pss, count = process_tree_pss_mb()
        if pss > self.peak_pss_mb:
            self.peak_pss_mb, self.peak_pss_processes = pss, count
        seconds = time.perf_counter() - start
        self.pss_seconds += seconds
        _measuring_seconds += seconds
        return seconds


class TimedCSVLogger(CSVLogger):
    """Lightning's CSVLogger (the ``lightning-rl`` CLI's default logger) counting its own seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        start = time.perf_counter()
        super().log_metrics(metrics, step)
        self.seconds += time.perf_counter() - start

    def log_hyperparams(self, params: Any) -> None:
        start = time.perf_counter()
        super().log_hyperparams(params)
        self.seconds += time.perf_counter() - start

    def save(self) -> None:
        start = time.perf_counter()
        super().save()
        self.seconds += time.perf_counter() - start

    def finalize(self, status: str) -> None:
        start = time.perf_counter()
        super().finalize(status)
        self.seconds += time.perf_counter() - start


def timed_checkpoint(base: type[ModelCheckpoint], **init_args: Any) -> ModelCheckpoint:
    """A ``base`` (Lightning's ModelCheckpoint or a subclass, e.g. lightning-rl's
    IterationCheckpoint) built with ``init_args`` whose ``seconds`` count its saving hooks."""

    class Timed(base):  # type: ignore[misc, valid-type]
        seconds = 0.0

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_train_epoch_end(trainer, pl_module)
            self.seconds += time.perf_counter() - start

        def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_validation_end(trainer, pl_module)
            self.seconds += time.perf_counter() - start

        def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_train_end(trainer, pl_module)
            self.seconds += time.perf_counter() - start

    Timed.__name__ = Timed.__qualname__ = f"Timed{base.__name__}"
    return Timed(**init_args)


def train_to_target(
    algo: Any,
    args: Any,
    *,
    check_val_every_n_epoch: int,
    max_epochs: int = 1_000_000,
    precision: str = "32-true",
    accelerator: str = "auto",
    callbacks: list[pl.Callback] | None = None,
    logger: Any = False,
    log_every_n_steps: int = 50,
) -> tuple[pl.Trainer, dict[str, Any]]:
    """Fit ``algo`` until both criteria hold (or ``args.max_env_steps``); the common result keys.

    ``args`` carries ``eval_target``, ``rolling_target``, ``max_env_steps`` and ``seed``. The
    result has :meth:`TimeToTarget.results` plus iterations, env steps, the seconds the learner
    waited for samples and the rest of ``fit`` (learning), peak RSS and total seconds; callers
    add what is particular to their algorithm. ``precision`` and ``accelerator`` are Lightning's
    flags (a config's ``trainer`` section sets them); ``callbacks``
    run besides the tracker (e.g. a wall-time cap); ``logger`` and ``log_every_n_steps`` are
    Lightning's (the default logs nothing; a checkpoint callback in ``callbacks`` then needs a
    ``dirpath``).
    """
    tracker = TimeToTarget(args.eval_target, args.rolling_target, args.max_env_steps)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        check_val_every_n_epoch=check_val_every_n_epoch,
        precision=precision,
        accelerator=accelerator,
        callbacks=[tracker, *(callbacks or [])],
        logger=logger,
        log_every_n_steps=log_every_n_steps,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks or []),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    fit_start = time.perf_counter()
    trainer.fit(algo)
    fit_seconds = time.perf_counter() - fit_start
    experience = algo.experience
    result = tracker.results()
    sampling = experience.sampling_seconds_lifetime
    result.update(
        iterations=trainer.current_epoch,
        env_steps=experience.num_env_steps_sampled_lifetime,
        seed=args.seed,
        peak_rss_mb=round(peak_rss_mb(), 1),
        sampling_seconds=round(sampling, 3),
        learning_seconds=round(fit_seconds - sampling - result["evaluation_seconds"], 3),
        total_seconds=round(seconds_since_start(), 3),
    )
    return trainer, result
