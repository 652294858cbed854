"""Videos of evaluation episodes: gymnasium's ``RecordVideo`` in the evaluation runners, then logged.

:class:`RecordEvaluationVideos` is a Lightning callback. It changes how the evaluation
EnvRunners build their envs (``render_mode="rgb_array"`` and a ``RecordVideo`` wrapper on the
first env copy of each runner, through the DataModule's evaluation-spec hook) and, after each
evaluation, logs the new MP4 files to the Trainer's loggers that take videos: wandb (the file
itself) and TensorBoard (an animated GIF in the Images tab). Training runners never render.

Each evaluation records the first ``episodes_per_evaluation`` episodes of the first env copy
of every evaluation runner; an episode cut off when the evaluation ends is discarded rather
than saved half-finished.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
from gymnasium.wrappers import RecordVideo

from lightning_rl.env_runners.env_runner import EnvRunnerSpec
from lightning_rl.envs.registration import EnvContext, EnvCreator
from lightning_rl.errors import ConfigError, EnvError
from lightning_rl.optional import require

__all__ = ["EvaluationVideoRecorder", "RecordEvaluationVideos", "RecordingEnvCreator", "log_videos"]


class EvaluationVideoRecorder(RecordVideo):
    """``RecordVideo`` that records the first ``episodes_per_evaluation`` episodes after every
    explicit reset (a new evaluation) and drops an unfinished recording instead of saving it.

    Same-step auto-reset calls ``reset`` right after a step that ended an episode; any other
    reset is the runner starting a new evaluation.
    """

    def __init__(
        self, env: gym.Env, video_folder: str, name_prefix: str, episodes_per_evaluation: int
    ) -> None:
        self.episodes_per_evaluation = int(episodes_per_evaluation)
        # Not a bound method: gymnasium deep-copies constructor args, which would copy a half-built self.
        self._budget = _EpisodeBudget()
        self._episode_ended = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overwriting existing videos": names are unique per runner
            super().__init__(
                env,
                video_folder,
                episode_trigger=self._budget,
                name_prefix=name_prefix,
                disable_logger=True,
            )

    def _discard_recording(self) -> None:
        if self.recording:
            self.recorded_frames = []
            self.recording = False
            self._video_name = None

    def reset(self, **kwargs: Any):
        if not self._episode_ended:  # a new evaluation, not an auto-reset
            self._discard_recording()
            self._budget.left = self.episodes_per_evaluation
        self._episode_ended = False
        return super().reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = super().step(action)
        self._episode_ended = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._discard_recording()
        super().close()


_RECORDERS_CREATED = itertools.count()


class _EpisodeBudget:
    """``RecordVideo``'s episode trigger: yes for the next ``left`` episodes."""

    def __init__(self) -> None:
        self.left = 0

    def __call__(self, episode_id: int) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        return False


class RecordingEnvCreator(EnvCreator):
    """Wraps an env creator so that env copy 0 of each runner records evaluation videos.

    Picklable (it travels to Ray evaluation actors); the video folder is absolute, so every
    process writes to the same place.
    """

    def __init__(self, inner: EnvCreator, video_folder: str | os.PathLike, episodes_per_evaluation: int = 1):
        super().__init__(inner.creator, inner.name)
        self.inner = inner
        self.video_folder = str(Path(video_folder).resolve())
        self.episodes_per_evaluation = int(episodes_per_evaluation)

    def __call__(self, context: EnvContext | dict | None = None) -> Any:
        if not isinstance(context, EnvContext):
            context = EnvContext(context)
        # pygame-rendered envs (classic control) would look for a display and a sound card, and
        # complain on headless machines; rgb_array rendering needs neither.
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        env = self.inner(context)
        if context.vector_index != 0:
            return env
        if not isinstance(env, gym.Env):
            raise EnvError(
                f"Recording videos needs a gymnasium.Env (gymnasium's RecordVideo wraps it); env "
                f"{self.name!r} is a {type(env).__name__}."
            )
        if getattr(env, "render_mode", None) != "rgb_array":
            raise EnvError(
                f"Recording videos of env {self.name!r} needs render_mode='rgb_array', but the env has "
                f"render_mode={getattr(env, 'render_mode', None)!r}; make its creator pass "
                "env_config['render_mode'] to the env."
            )
        # Unique per env instance: evaluation runners are rebuilt (per validate/fit call) and
        # RecordVideo numbers episodes from 0 again.
        prefix = f"evaluation-runner{context.worker_index}-pid{os.getpid()}-{next(_RECORDERS_CREATED)}"
        return EvaluationVideoRecorder(env, self.video_folder, prefix, self.episodes_per_evaluation)


def record_videos_spec(spec: EnvRunnerSpec, video_folder: str | os.PathLike, episodes: int) -> EnvRunnerSpec:
    """An evaluation runner spec whose first env copy renders and records."""
    env_config = {"render_mode": "rgb_array", **spec.env_config}
    creator = RecordingEnvCreator(spec.env_creator, video_folder, episodes)
    return dataclasses.replace(spec, env_creator=creator, env_config=env_config)


class RecordEvaluationVideos(pl.Callback):
    """Record evaluation episodes to MP4 and log them to wandb/TensorBoard.

    Args:
        video_dir: where the MP4 files go (default: ``<trainer.log_dir or default_root_dir>/videos``).
        episodes_per_evaluation: episodes recorded per evaluation runner and evaluation.
        log_videos: send new videos to the Trainer's loggers that accept videos.
        key: the logged name.
    """

    def __init__(
        self,
        video_dir: str | os.PathLike | None = None,
        episodes_per_evaluation: int = 1,
        log_videos: bool = True,
        key: str = "evaluation/video",
    ) -> None:
        if int(episodes_per_evaluation) < 1:
            raise ConfigError(f"episodes_per_evaluation must be >= 1, got {episodes_per_evaluation!r}.")
        self.video_dir = Path(video_dir).resolve() if video_dir is not None else None
        self.episodes_per_evaluation = int(episodes_per_evaluation)
        self.log_videos = log_videos
        self.key = key
        self.videos: list[Path] = []  # every video recorded so far, oldest first
        self.last_videos: list[Path] = []  # those of the latest evaluation
        self._seen: set[Path] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.video_dir is None:
            root = trainer.log_dir or trainer.default_root_dir
            self.video_dir = Path(root).resolve() / "videos"
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self._seen |= set(self.video_dir.glob("*.mp4"))
        experience = getattr(pl_module, "experience", None)
        if experience is None:
            raise ConfigError("RecordEvaluationVideos needs a lightning-rl Algorithm as the LightningModule.")
        experience.add_evaluation_spec_transform(self._transform)

    def _transform(self, spec: EnvRunnerSpec) -> EnvRunnerSpec:
        return record_videos_spec(spec, self.video_dir, self.episodes_per_evaluation)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        new = sorted(
            set(self.video_dir.glob("*.mp4")) - self._seen, key=lambda p: (p.stat().st_mtime, p.name)
        )
        self._seen |= set(new)
        if trainer.sanity_checking:  # Lightning's sanity check is not an evaluation of the policy
            return
        self.last_videos = new
        self.videos.extend(new)
        if self.log_videos and new and trainer.is_global_zero:
            for logger in trainer.loggers:
                log_videos(logger, self.key, new, step=trainer.global_step)


def log_videos(logger: Any, key: str, paths: list[Path], step: int) -> bool:
    """Log MP4 files to a Lightning logger that takes videos; False for loggers that do not."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        logger.log_video(key, [str(p) for p in paths], step=step, format=["mp4"] * len(paths))
        return True
    if isinstance(logger, TensorBoardLogger):
        writer = logger.experiment
        for index, path in enumerate(paths):
            tag = key if len(paths) == 1 else f"{key}/{index}"
            writer._get_file_writer().add_summary(_gif_summary(tag, path), step)
        writer.flush()
        return True
    return False


def _gif_summary(tag: str, path: Path, max_width: int = 320) -> Any:
    """A TensorBoard image summary holding the video as an animated GIF.

    ``SummaryWriter.add_video`` needs ``moviepy.editor``, which moviepy 2 removed (it then
    logs nothing); GIFs in an image summary are what it would have written.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary  # the TensorBoard logger's own

    VideoFileClip = require("moviepy", purpose="Logging evaluation videos").VideoFileClip
    Image = require("PIL.Image", purpose="Logging evaluation videos", extra="media")

    with VideoFileClip(str(path)) as clip:
        fps = float(clip.fps or 30)
        frames = [Image.fromarray(np.asarray(frame)) for frame in clip.iter_frames()]
    if frames and frames[0].width > max_width:
        size = (max_width, max(1, round(frames[0].height * max_width / frames[0].width)))
        frames = [frame.resize(size) for frame in frames]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0
    )
    image = Summary.Image(
        height=frames[0].height, width=frames[0].width, colorspace=3, encoded_image_string=buffer.getvalue()
    )
    return Summary(value=[Summary.Value(tag=tag, image=image)])
