"""Optional extras: every module imports without them, and using one that is absent names it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lightning_rl.errors import MissingExtraError
from lightning_rl.optional import EXTRA_OF_PACKAGE, require

REPO = Path(__file__).resolve().parents[1]

# Import every module of the package while the packages of every extra are unimportable.
BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, importlib.machinery, pkgutil, sys, traceback

    BLOCKED = set(sys.argv[1].split(","))

    PACKAGE_DIR = sys.argv[2]

    def importer_is_lightning_rl():
        frame = sys._getframe(2)
        while frame is not None and (
            frame.f_code.co_filename.startswith("<frozen importlib")
            or "/importlib/" in frame.f_code.co_filename
        ):
            frame = frame.f_back
        return frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR)

    class BlockExtras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # Only lightning-rl's own imports are blocked: a library that imports a package
        # because its metadata says it is installed would not do so in a real base venv.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in BLOCKED or not importer_is_lightning_rl():
                return None
            return importlib.machinery.ModuleSpec(name, self)

        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

        def exec_module(self, module):
            raise ModuleNotFoundError(f"No module named {module.__name__!r}", name=module.__name__)

    sys.meta_path.insert(0, BlockExtras())
    import lightning_rl

    names = [m.name for m in pkgutil.walk_packages(lightning_rl.__path__, prefix="lightning_rl.")]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name + "\\n" + traceback.format_exc())
    print(len(names))
    for failure in failed:
        print("FAILED", failure)

    from lightning_rl.errors import MissingExtraError
    from lightning_rl.export import _export_onnx
    try:
        _export_onnx(None, {}, None, "")
    except MissingExtraError as exc:
        print("EXPORT:", exc)
    from lightning_rl.envs.registration import make_env
    try:
        make_env("ale_py:ALE/Pong-v5")
    except MissingExtraError as exc:
        print("ATARI:", exc)
    """
)


def _base_install_distributions() -> set[str]:
    """Distributions that ``pip install lightning-rl`` (no extras) brings, transitively."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [("lightning-rl", frozenset())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requirements:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_every_module_imports_without_any_extra_and_using_one_names_it():
    """The packages of extras that the base install does not bring are made unimportable."""
    base = _base_install_distributions()
    providers = metadata.packages_distributions()
    blocked = ",".join(
        sorted(
            package
            for package in EXTRA_OF_PACKAGE
            # torchmetrics imports PIL whenever pillow's metadata says it is installed, which
            # a blocked import cannot fake; CI's base-install venv covers PIL for real.
            if package != "PIL" and not any(canonicalize_name(d) in base for d in providers.get(package, []))
        )
    )
    assert "onnx" in blocked and "ale_py" in blocked
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT_SCRIPT, blocked, str(REPO / "lightning_rl")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert int(lines[0]) > 60  # the walk really found the package's modules
    assert not [line for line in lines if line.startswith("FAILED")], proc.stdout[-6000:]
    assert "EXPORT: ONNX export needs the package 'onnx'" in proc.stdout
    assert 'pip install "lightning-rl[export]"' in proc.stdout
    assert "ATARI: Env id 'ale_py:ALE/Pong-v5' needs the package 'ale_py'" in proc.stdout
    assert 'pip install "lightning-rl[atari]"' in proc.stdout


def test_require_names_the_extra_and_keeps_other_import_errors():
    with pytest.raises(MissingExtraError, match=r'pip install "lightning-rl\[export\]"'):
        require("no_such_package_for_lightning_rl", purpose="A test feature", extra="export")
    with pytest.raises(ImportError):  # MissingExtraError is an ImportError for old guards
        require("no_such_package_for_lightning_rl", purpose="A test feature", extra="export")
    assert require("json", purpose="anything").dumps([1]) == "[1]"


def test_every_optional_package_belongs_to_a_declared_extra():
    """EXTRA_OF_PACKAGE may only name extras that pyproject.toml declares."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for package, extra in EXTRA_OF_PACKAGE.items():
        assert extra in extras, f"{package} maps to the undeclared extra {extra!r}"


def _mujoco_env_without_mujoco(**kwargs):
    import gymnasium as gym

    # What gymnasium's MuJoCo envs raise when the package is missing.
    raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`')


def test_a_gymnasium_env_missing_its_dependency_names_our_extra():
    import gymnasium as gym

    from lightning_rl import make_env

    gym.register("LightningRlTestNoMujoco-v0", entry_point=_mujoco_env_without_mujoco)
    try:
        with pytest.raises(
            MissingExtraError, match=r'LightningRlTestNoMujoco-v0.*pip install "lightning-rl\[mujoco\]"'
        ):
            make_env("LightningRlTestNoMujoco-v0")
    finally:
        gym.registry.pop("LightningRlTestNoMujoco-v0", None)
