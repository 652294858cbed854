"""Optional packages: import them where a feature needs them, naming the extra when absent.

The base install (``pip install lightning-rl``) trains, samples on Ray and reads offline data;
export, videos and plots, Atari and PettingZoo's SISL games need extras. A module of
lightning-rl must import without any extra, so the packages of an extra are imported through
:func:`require` inside the function that uses them: a user without the extra then gets one
:class:`~lightning_rl.errors.MissingExtraError` saying what to install, not a bare
``ModuleNotFoundError`` from deep inside a library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lightning_rl.errors import MissingExtraError

#: Which extra of ``pyproject.toml`` brings each optional top-level package.
EXTRA_OF_PACKAGE = {
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "moviepy": "media",
    "matplotlib": "media",
    "PIL": "media",
    "ale_py": "atari",
    "cv2": "atari",
    "pymunk": "sisl",
    "scipy": "sisl",
    "pygame": "sisl",
    "stable_baselines3": "bench",
    "mujoco": "mujoco",
}


def install_hint(extra: str) -> str:
    return f'pip install "lightning-rl[{extra}]"'


def missing_extra_error(package: str, purpose: str, extra: str | None = None) -> MissingExtraError:
    """The one error for ``purpose`` needing ``package`` (of ``extra``) that is not installed."""
    extra = extra or EXTRA_OF_PACKAGE.get(package.split(".")[0])
    hint = f": {install_hint(extra)}" if extra else f": pip install {package.split('.')[0]}"
    return MissingExtraError(f"{purpose} needs the package {package!r}, which is not installed{hint}")


def require(module: str, *, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that brings it.

    Only a missing ``module`` (or a package of an extra that it imports) becomes a
    MissingExtraError; an installed package that fails for another reason keeps its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or module).split(".")[0]
        if missing != module.split(".")[0] and missing not in EXTRA_OF_PACKAGE:
            raise
        raise missing_extra_error(module, purpose, extra) from exc
