"""Learners on a Ray cluster: Lightning's DDP ranks as Ray Train workers (``TorchTrainer``).

Local DDP (``Trainer(strategy="ddp", devices=N)``) starts its ranks as processes on the
driver's machine. Here each rank is a Ray Train worker instead: Ray places it on any node that
has its resources (``num_cpus_per_learner``, ``num_gpus_per_learner``,
``custom_resources_per_learner``, RLlib's names), gives it its own GPU where it asks for one,
and joins the ranks in one ``torch.distributed`` group (gloo on CPU, NCCL on GPU). Inside each
worker the algorithm trains under an ordinary Lightning ``Trainer`` with Ray's
``RayDDPStrategy`` and ``RayLightningEnvironment``: gradients are all-reduced by DDP exactly
as in a local DDP run.

**One runner group per learner.** Each rank samples with its own EnvRunners, as local DDP
does: ``num_env_runners`` and ``train_batch_size`` are per learner (RLlib's
``train_batch_size_per_learner``), each rank's runners are Ray actors started by that rank and
placed by their own resources anywhere in the cluster, and each rank seeds its env copies
differently. A single group shared by all learners would put the driver between sampling and
every rank's batch (a second data path to keep in lockstep); per-rank groups scale sampling
with the learners and need nothing beyond DDP's all-reduce and the few collectives of
:mod:`lightning_rl.distributed` (episode metrics, evaluation once on rank 0).

**Checkpoints go to ``storage_path``** (Ray Train's ``RunConfig.storage_path``): a directory
every node can reach (NFS, a ReadWriteMany volume) or a URI (``s3://...``, ``gs://...``).
Each checkpoint is ``<storage_path>/<name>/checkpoint_<date>/checkpoint.ckpt``, a plain
lightning-rl checkpoint: :meth:`RayTrainRun.restore` (or another run's ``resume_from``) and
``TrainingRun.from_checkpoint`` (training on one machine) read it. Calling
:meth:`RayTrainRun.fit` again with the same ``name`` continues from the run's latest
checkpoint (Ray Train restores the run from its storage), so a driver that died can be
restarted with the same settings. The CSV log of rank 0 goes to ``<storage_path>/<name>/logs``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_rl import checkpoint_format as ckpt
from lightning_rl import distributed
from lightning_rl.algorithms.base import Algorithm
from lightning_rl.atomic_checkpoint_io import AtomicCheckpointIO
from lightning_rl.env_runners.env_runner_group import EnvRunnerPlacement
from lightning_rl.errors import CheckpointError, ConfigError
from lightning_rl.ray_cluster import ensure_ray, shutdown_ray_if_started_here
from lightning_rl.training_run import nest_metrics

if TYPE_CHECKING:
    from lightning_rl.config.algorithm_config import AlgorithmConfig

#: The Lightning checkpoint's name inside each Ray Train checkpoint directory (Ray's own layout).
CHECKPOINT_FILE = "checkpoint.ckpt"
#: Where learners run: Lightning's own DDP processes on this machine, or Ray Train workers.
LEARNER_PLACEMENTS = ("local", "ray")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# The Trainer settings this module decides itself (one rank per worker, Ray's DDP).
_RAY_OWNED_TRAINER_KWARGS = ("strategy", "devices", "accelerator", "num_nodes")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _is_uri(path: str) -> bool:
    return "://" in path


def _file_in(checkpoint_dir: str) -> str:
    """The Lightning checkpoint file inside a Ray Train checkpoint directory (path or URI)."""
    return f"{checkpoint_dir.rstrip('/')}/{CHECKPOINT_FILE}"


@dataclass(frozen=True)
class RayLearnerSettings:
    """How many learners, what each asks Ray for, and where their checkpoints go.

    Args:
        num_learners: DDP ranks, one Ray Train worker each (>= 1).
        num_cpus_per_learner: Ray CPUs per learner (also its torch threads).
        num_gpus_per_learner: Ray GPUs per learner; > 0 trains on that GPU (NCCL between ranks).
        custom_resources_per_learner: e.g. ``{"learner": 1}``: only nodes started with that
            resource hold learners (one per node when each node offers one).
        placement_strategy: Ray Train's placement group strategy for the learners
            (``PACK``, ``SPREAD``, ``STRICT_PACK``, ``STRICT_SPREAD``).
        storage_path: a directory every node can reach, or a URI (``s3://bucket/runs``);
            None: Ray Train's default (``~/ray_results``, enough for one machine only).
        name: the run's folder under ``storage_path``; the same name continues that run.
        checkpoint_frequency: a checkpoint every N iterations (and after the last one).
        num_checkpoints_to_keep: older checkpoints are deleted (None keeps all).
        max_failures: how often Ray Train restarts the learners from the latest checkpoint
            after a learner (or its node) fails.
    """

    num_learners: int = 2
    num_cpus_per_learner: float = 1.0
    num_gpus_per_learner: float = 0.0
    custom_resources_per_learner: dict[str, float] = field(default_factory=dict)
    placement_strategy: str = "PACK"
    storage_path: str | None = None
    name: str | None = None
    checkpoint_frequency: int = 1
    num_checkpoints_to_keep: int | None = None
    max_failures: int = 0

    def __post_init__(self) -> None:
        def whole(name: str, value: Any, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")

        def amount(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}.")

        whole("num_learners", self.num_learners, 1)
        whole("checkpoint_frequency", self.checkpoint_frequency, 1)
        whole("max_failures", self.max_failures, 0)
        if self.num_checkpoints_to_keep is not None:
            whole("num_checkpoints_to_keep", self.num_checkpoints_to_keep, 1)
        amount("num_cpus_per_learner", self.num_cpus_per_learner)
        amount("num_gpus_per_learner", self.num_gpus_per_learner)
        if not isinstance(self.custom_resources_per_learner, dict):
            raise ConfigError(
                "custom_resources_per_learner must be a dict of Ray resource names to amounts, got "
                f"{self.custom_resources_per_learner!r}."
            )
        for key, value in self.custom_resources_per_learner.items():
            if not isinstance(key, str) or not key or key in ("CPU", "GPU"):
                raise ConfigError(
                    f"custom_resources_per_learner key {key!r} must be a custom resource name (CPUs and "
                    "GPUs have num_cpus_per_learner / num_gpus_per_learner)."
                )
            amount(f"custom_resources_per_learner[{key!r}]", value)
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ConfigError(
                f"placement_strategy {self.placement_strategy!r} is not one of {list(PLACEMENT_STRATEGIES)}."
            )
        if self.storage_path is not None and (
            not isinstance(self.storage_path, str) or not self.storage_path
        ):
            raise ConfigError(f"storage_path must be a directory or URI string, got {self.storage_path!r}.")
        if self.name is not None and (not isinstance(self.name, str) or not _RUN_NAME.match(self.name)):
            raise ConfigError(
                "name must be a folder name of letters, digits, '_', '-', '.' (at most 128 characters), "
                f"got {self.name!r}."
            )

    def resources_per_learner(self) -> dict[str, float]:
        """The Ray resources of one learner (its Ray Train worker)."""
        bundle = {"CPU": float(self.num_cpus_per_learner)}
        if self.num_gpus_per_learner:
            bundle["GPU"] = float(self.num_gpus_per_learner)
        bundle.update({k: float(v) for k, v in self.custom_resources_per_learner.items()})
        return bundle


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state (names, shapes, values): equal digests mean equal weights."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _ReportToRayTrain(pl.Callback):
    """Reports every iteration's metrics to Ray Train, with a checkpoint every N iterations and
    one at the end (however the fit ends: last iteration or a stopping callback).

    Only rank 0 writes (Lightning's ``save_checkpoint`` is rank-0-only) and attaches the
    checkpoint; every rank reports, as Ray Train requires. The final report also carries every
    rank's node id and weight digest, so the driver sees where the learners ran and that DDP
    kept their weights equal (Ray Train's result holds the metrics of the latest checkpoint).
    """

    def __init__(self, checkpoint_frequency: int, last_iteration: int, fit_id: str) -> None:
        self.checkpoint_frequency = checkpoint_frequency
        self.last_iteration = last_iteration
        self.fit_id = fit_id
        self.last_metrics: dict[str, Any] = {}

    def _metrics(self, trainer: pl.Trainer, module: Algorithm) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for key, value in trainer.callback_metrics.items():
            metrics[key] = float(value.item()) if hasattr(value, "item") else value
        metrics["training_iteration"] = trainer.current_epoch + 1
        metrics["num_env_steps_sampled_lifetime"] = int(module.experience.num_env_steps_sampled_lifetime)
        return metrics

    def on_train_epoch_end(self, trainer: pl.Trainer, module: Algorithm) -> None:
        import ray.train

        metrics = self._metrics(trainer, module)
        self.last_metrics = metrics
        iteration = metrics["training_iteration"]
        if iteration % self.checkpoint_frequency == 0 and iteration < self.last_iteration:
            self._report_with_checkpoint(trainer, metrics)
        else:
            ray.train.report(metrics)

    def on_train_end(self, trainer: pl.Trainer, module: Algorithm) -> None:
        import ray

        if not self.last_metrics:
            return  # no iteration ran (restored at the target already)
        learners = distributed.all_gather_object(
            {"node_id": ray.get_runtime_context().get_node_id(), "param_sha256": param_digest(module)}
        )
        self._report_with_checkpoint(trainer, {**self.last_metrics, "learner_ranks": learners})

    def _report_with_checkpoint(self, trainer: pl.Trainer, metrics: dict[str, Any]) -> None:
        import ray.train

        folder = tempfile.mkdtemp(prefix=f"lightning_rl_ckpt_rank{trainer.global_rank}_")
        try:
            trainer.save_checkpoint(os.path.join(folder, CHECKPOINT_FILE), weights_only=False)
            checkpoint = None
            if trainer.global_rank == 0:
                checkpoint = ray.train.Checkpoint.from_directory(folder)
                checkpoint.set_metadata(
                    {
                        "training_iteration": metrics["training_iteration"],
                        "fit_id": self.fit_id,
                        "fit_target_iteration": self.last_iteration,
                    }
                )
            ray.train.report(metrics, checkpoint=checkpoint)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _learner_loop(config: dict[str, Any]) -> None:
    """One learner (DDP rank): build the algorithm, train it under Ray's DDP, report."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    algo_kwargs = dict(config["algo_kwargs"])
    seed = algo_kwargs.get("seed")
    if seed is not None:
        pl.seed_everything(int(seed), verbose=False)  # the same initial weights on every rank
    algorithm: Algorithm = config["algo_class"](**algo_kwargs)
    # The run's own latest checkpoint (a restart after a failure, fit() again, or the script run
    # again with the same name) comes first; else the checkpoint the driver resumes from.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("resume_from"):
        checkpoint = ray.train.Checkpoint(config["resume_from"])
    metadata = (checkpoint.get_metadata() or {}) if checkpoint is not None else {}
    if metadata.get("fit_id") == config["fit_id"]:
        # Restarted within this fit (a learner or node failed): the same goal as before.
        target = int(metadata["fit_target_iteration"])
    else:
        # A checkpoint without Ray Train metadata (a TrainingRun's file): the driver read its count.
        restored = metadata.get("training_iteration", config["start_iteration"] if checkpoint else 0)
        target = int(restored) + int(config["num_iterations"])
    report = _ReportToRayTrain(config["checkpoint_frequency"], target, config["fit_id"])
    kwargs: dict[str, Any] = {
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "log_every_n_steps": 1,
        "inference_mode": False,
    }
    kwargs.update(config["trainer_kwargs"])
    callbacks = kwargs.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    plugins = kwargs.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    if "logger" not in kwargs:
        kwargs["logger"] = CSVLogger(save_dir=config["log_dir"], name="logs")
    kwargs.update(
        max_epochs=target,
        strategy=RayDDPStrategy(),
        devices="auto",
        accelerator="gpu" if config["use_gpu"] else "cpu",
        callbacks=[*callbacks, report],
        plugins=[*plugins, RayLightningEnvironment(), AtomicCheckpointIO()],
    )
    trainer = prepare_trainer(pl.Trainer(**kwargs))
    if checkpoint is None:
        trainer.fit(algorithm)
        return
    with checkpoint.as_directory() as folder:
        trainer.fit(algorithm, ckpt_path=os.path.join(folder, CHECKPOINT_FILE), weights_only=True)


class RayTrainRun:
    """RLlib's ``Algorithm`` API (train/fit/save/restore/stop) with learners on Ray Train workers.

    Args:
        algo_class: the algorithm (a lightning-rl :class:`~lightning_rl.algorithms.base.Algorithm`).
        algo_kwargs: its ``__init__`` kwargs; each learner builds its own copy from them.
        trainer_kwargs: more ``lightning.Trainer`` kwargs (callbacks, logger, precision ...);
            strategy, devices, accelerator and num_nodes are decided here.
        settings: the learners' number, resources and checkpoint storage.
        resume_from: a checkpoint directory or ``checkpoint.ckpt`` (path or URI) to start from.

    Every :meth:`fit` is one Ray Train run of ``num_iterations`` iterations: the learners start,
    restore the latest checkpoint, train, checkpoint and stop. Starting them costs seconds, so
    prefer ``fit(n)`` to ``n`` calls of :meth:`train`.
    """

    def __init__(
        self,
        algo_class: type[Algorithm],
        algo_kwargs: dict[str, Any] | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
        settings: RayLearnerSettings | None = None,
        *,
        resume_from: str | os.PathLike | None = None,
    ) -> None:
        if not (isinstance(algo_class, type) and issubclass(algo_class, Algorithm)):
            raise ConfigError(f"algo_class must be a lightning-rl Algorithm subclass, got {algo_class!r}.")
        self.algo_class = algo_class
        self.algo_kwargs = dict(algo_kwargs or {})
        self.trainer_kwargs = dict(trainer_kwargs or {})
        clash = [k for k in _RAY_OWNED_TRAINER_KWARGS if k in self.trainer_kwargs]
        if clash:
            raise ConfigError(
                f"Trainer settings {clash} are decided by the learners on Ray (one DDP rank per Ray Train "
                "worker); set num_learners / num_gpus_per_learner instead."
            )
        self.settings = settings or RayLearnerSettings()
        self.name = self.settings.name or f"{algo_class.__name__}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        storage = self.settings.storage_path
        if storage is not None and not _is_uri(storage):
            storage = str(Path(storage).expanduser().resolve())
        self.storage_path = storage
        # Built here once, so a bad setting fails now, not in every learner on the cluster.
        self._probe = algo_class(**self.algo_kwargs)
        self._resume_from: str | None = None
        self._iteration = 0
        self._latest: str | None = None
        self._stopped = False
        self._start_time = time.perf_counter()
        self.last_result: Any = None
        if resume_from is not None:
            self.restore(resume_from)

    @classmethod
    def from_config(cls, config: AlgorithmConfig) -> RayTrainRun:
        """The run an ``AlgorithmConfig`` with ``learners(learner_placement="ray")`` describes."""
        trainer_kwargs = dict(config.trainer_kwargs)
        if config.evaluation_interval:
            trainer_kwargs.setdefault("check_val_every_n_epoch", config.evaluation_interval)
        else:
            trainer_kwargs.setdefault("limit_val_batches", 0)
        learner = dict(getattr(config, "ray_learner_settings", {}) or {})
        settings = RayLearnerSettings(
            num_learners=max(1, int(config.num_learners)),
            num_cpus_per_learner=config.algo_kwargs.get("num_cpus_per_learner") or 1,
            num_gpus_per_learner=config.num_gpus_per_learner or 0,
            **learner,
        )
        return cls(config.algo_class, config.algo_kwargs, trainer_kwargs, settings)

    # -- RLlib API ---------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """Completed training iterations, including restored ones."""
        return self._iteration

    @property
    def run_path(self) -> str | None:
        """``<storage_path>/<name>``: the run's checkpoints and logs (None before a storage is known)."""
        return None if self.storage_path is None else f"{self.storage_path.rstrip('/')}/{self.name}"

    def train(self) -> dict[str, Any]:
        """One training iteration (a whole Ray Train run: use :meth:`fit` for many).

        Every call starts the learners again (workers, DDP group, each rank's EnvRunners, the
        restore of the latest checkpoint): Ray Train ties a worker group's life to one
        ``TorchTrainer.fit()`` and has no public way to hand running workers more iterations.
        Keeping them would need a ``fit()`` left running in a thread and a command queue to the
        learners, a control channel beside Ray Train's that its failure handling would not cover.
        """
        return self.fit(num_iterations=1)

    def fit(self, num_iterations: int) -> dict[str, Any]:
        """Train ``num_iterations`` more iterations on the learners and return the last results."""
        self._check_running()
        if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
            raise ConfigError(f"num_iterations must be an integer >= 1, got {num_iterations!r}.")
        from ray import train
        from ray.train.torch import TorchTrainer

        self._ensure_ray()
        start = time.perf_counter()
        s = self.settings
        log_dir = self.run_path or os.path.join(os.path.expanduser("~/ray_results"), self.name)
        trainer = TorchTrainer(
            _learner_loop,
            train_loop_config={
                "algo_class": self.algo_class,
                "algo_kwargs": self.algo_kwargs,
                "trainer_kwargs": self.trainer_kwargs,
                "num_iterations": num_iterations,
                "start_iteration": self._iteration,
                "fit_id": f"{self.name}/{time.time_ns()}",
                "checkpoint_frequency": s.checkpoint_frequency,
                "use_gpu": s.num_gpus_per_learner > 0,
                "resume_from": self._resume_from,
                "log_dir": log_dir,
            },
            scaling_config=train.ScalingConfig(
                num_workers=s.num_learners,
                use_gpu=s.num_gpus_per_learner > 0,
                resources_per_worker=s.resources_per_learner(),
                placement_strategy=s.placement_strategy,
            ),
            run_config=train.RunConfig(
                name=self.name,
                storage_path=self.storage_path,
                checkpoint_config=train.CheckpointConfig(num_to_keep=s.num_checkpoints_to_keep),
                failure_config=train.FailureConfig(max_failures=s.max_failures),
            ),
        )
        result = trainer.fit()
        self.last_result = result
        self._resume_from = None
        metrics = dict(result.metrics or {})
        if result.checkpoint is not None:
            self._latest = result.checkpoint.path
        self._iteration = int(metrics.get("training_iteration", self._iteration))
        return self._results(metrics, time.perf_counter() - start)

    def save(self, path: str | os.PathLike | None = None) -> str:
        """The latest checkpoint's ``checkpoint.ckpt`` (already in storage); with ``path``, a copy there."""
        self._check_running()
        if self._latest is None:
            raise ConfigError("Call train() or fit() before save(): no checkpoint has been written yet.")
        if path is None:
            return _file_in(self._latest)
        import ray.train

        folder = ray.train.Checkpoint(self._latest).to_directory(str(path))
        return os.path.join(folder, CHECKPOINT_FILE)

    save_to_path = save

    def restore(self, path: str | os.PathLike) -> None:
        """The next :meth:`fit` starts from this checkpoint (a directory or its ``checkpoint.ckpt``)."""
        import ray.train

        path = str(path)
        if path.endswith(CHECKPOINT_FILE):
            path = path[: -len(CHECKPOINT_FILE)].rstrip("/") or "/"
        checkpoint = ray.train.Checkpoint(path)
        with checkpoint.as_directory() as folder:
            file = os.path.join(folder, CHECKPOINT_FILE)
            if not os.path.isfile(file):
                raise CheckpointError(f"No {CHECKPOINT_FILE} in the checkpoint directory {path!r}.")
            loaded = ckpt.load_checkpoint(file, algorithm_class=self.algo_class)
        iteration = (checkpoint.get_metadata() or {}).get("training_iteration")
        # Without Ray Train's metadata: a TrainingRun's checkpoint, saved after its last iteration.
        self._iteration = int(iteration if iteration is not None else loaded.get("epoch", 0))
        self._resume_from = path
        self._latest = path
        if self.last_result is not None:
            # The run's own latest checkpoint would win over resume_from: continue as a new run.
            self.name = f"{self.name}_restored_{time.strftime('%H-%M-%S')}"

    restore_from_path = restore

    def get_module(self) -> Algorithm:
        """An algorithm with the latest checkpoint's weights (the learners' own copies are gone)."""
        if self._latest is not None:
            import ray.train

            with ray.train.Checkpoint(self._latest).as_directory() as folder:
                loaded = ckpt.load_checkpoint(
                    os.path.join(folder, CHECKPOINT_FILE), algorithm_class=self.algo_class
                )
            self._probe.on_load_checkpoint(loaded)
            self._probe.load_state_dict(loaded["state_dict"])
        return self._probe

    def get_policy(self, policy_id: str | None = None) -> Any:
        """RLlib's ``algo.get_policy()`` from the latest checkpoint's weights."""
        return self.get_module().get_policy(policy_id)

    def stop(self) -> None:
        """Release Ray if this process started it (the learners stop at the end of every fit)."""
        if self._stopped:
            return
        shutdown_ray_if_started_here()
        self._stopped = True

    # -- helpers -----------------------------------------------------------------------------
    def _ensure_ray(self) -> None:
        """Join (or start) Ray with room for every learner and each learner's runners."""
        h = self._probe.hparams
        s = self.settings
        runners: list[dict[str, float]] = []
        runners += [EnvRunnerPlacement(**self._probe.env_runner_placement_kwargs()).bundle()] * int(
            h.get("num_env_runners", 0) or 0
        )
        runners += [EnvRunnerPlacement(**self._probe.env_runner_placement_kwargs(True)).bundle()] * int(
            h.get("evaluation_num_env_runners", 0) or 0
        )
        bundles = [s.resources_per_learner()] * s.num_learners + runners * s.num_learners
        ensure_ray(
            bundles=bundles,
            address=h.get("address"),
            init_kwargs=dict(h.get("ray_init_kwargs") or {}),
            timeout_s=h.get("ray_resources_timeout_s"),
        )

    def _check_running(self) -> None:
        if self._stopped:
            raise ConfigError("This RayTrainRun was stopped; build a new one.")

    def _results(self, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
        learners = metrics.pop("learner_ranks", [])
        metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        result = nest_metrics(metrics)
        lifetime = int(metrics.get("num_env_steps_sampled_lifetime", 0))
        result.setdefault("env_runners", {})["num_env_steps_sampled_lifetime"] = lifetime
        result["num_env_steps_sampled_lifetime"] = lifetime
        result["learner_ranks"] = learners  # per rank: node_id, param_sha256
        result["training_iteration"] = self._iteration
        result["time_this_iter_s"] = seconds
        result["time_total_s"] = time.perf_counter() - self._start_time
        result["checkpoint"] = None if self._latest is None else _file_in(self._latest)
        return result

    def __enter__(self) -> RayTrainRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
