"""A malicious-checkpoint corpus: a real PPO checkpoint edited in its plain data only.

Every entry names something that would run code when imported or called (``subprocess:Popen``
with a shell command, a module whose import has a side effect, a classic ``__reduce__`` pickle);
every loader must refuse it with a :class:`CheckpointError` that names the entry, and the
payload's side effect (a marker file) must never happen. The checksum is recomputed after each
edit, as an attacker would: it guards against corruption, not against a hostile file.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

from lightning_rl import Policy
from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.cli import main as cli_main
from lightning_rl.errors import CheckpointError
from lightning_rl.training_run import TrainingRun


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    run = (
        PPOConfig(defaults="native")
        .environment("CartPole-v1")
        .env_runners(env_to_module_connector=["MeanStdFilter"])
        .training(train_batch_size=32, minibatch_size=32, num_epochs=1)
        .debugging(seed=1)
        .trainer(default_root_dir=str(root), logger=False)
        .build_algo()
    )
    run.train()
    path = Path(run.save(root / "good.ckpt"))
    run.stop()
    return path


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path whose *import* writes a marker file (import-time code)."""
    marker = tmp_path / "imported.marker"
    name = f"evil_payload_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import subprocess\n"
        "class Anything(subprocess.Popen):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def shell(marker: Path) -> dict:
    return {"args": f"touch {marker}", "shell": True}


def edited(good: Path, tmp_path: Path, edit) -> Path:
    raw = torch.load(good, weights_only=True)
    edit(raw)
    ckpt.add_checksum(raw)  # a hostile file has a valid checksum too
    path = tmp_path / "edited.ckpt"
    torch.save(raw, path)
    return path


def recipe(raw: dict) -> dict:
    return raw["lightning_rl"]["inference"]["default_policy"]


def popen_policy_class(marker):
    def edit(raw):
        recipe(raw)["policy_class"] = "subprocess:Popen"
        recipe(raw)["policy_kwargs"] = shell(marker)

    return edit, "subprocess:Popen"


def popen_recipe_connector(marker):
    def edit(raw):
        recipe(raw)["env_to_module"] = [{"name": "subprocess:Popen", "config": shell(marker)}]

    return edit, "subprocess:Popen"


def popen_hparam_connector(marker):
    def edit(raw):
        raw["hyper_parameters"]["env_to_module_connector"] = [
            {"name": "subprocess.Popen", "config": shell(marker)}
        ]

    return edit, "subprocess.Popen"


def popen_env(marker):
    def edit(raw):
        raw["hyper_parameters"]["env"] = "subprocess:Popen"
        raw["hyper_parameters"]["env_config"] = shell(marker)

    return edit, "subprocess:Popen"


def popen_custom_model(marker):
    def edit(raw):
        raw["hyper_parameters"]["model_config"] = {
            "custom_model": "subprocess:Popen",
            "custom_model_config": {"shell": True},
        }
        recipe(raw)["policy_kwargs"]["model_config"]["custom_model"] = "subprocess:Popen"

    return edit, "subprocess:Popen"


def system_mapping_fn(marker):
    def edit(raw):
        raw["hyper_parameters"]["policy_mapping_fn"] = "os:system"

    return edit, "os:system"


def mapping_class_path(marker):
    def edit(raw):
        raw["hyper_parameters"]["policy_mapping_fn"] = {
            "class_path": "subprocess.Popen",
            "init_args": shell(marker),
        }

    return edit, "subprocess.Popen"


def reaching_through_a_trusted_module(marker):
    """``lightning_rl.policy`` is trusted, but ``os.system`` reached through it is not ours."""

    def edit(raw):
        recipe(raw)["env_to_module"] = [{"name": "lightning_rl.policy:os.system", "config": {}}]

    return edit, "lightning_rl.policy:os.system"


# Edits of the hyperparameters only: a policy served from its stored recipe never builds from
# them, so Policy.from_checkpoint loads (and runs nothing); every builder refuses.
HYPERPARAMETERS_ONLY = {"popen_hparam_connector", "popen_env", "system_mapping_fn", "mapping_class_path"}

EDITS = [
    popen_policy_class,
    popen_recipe_connector,
    popen_hparam_connector,
    popen_env,
    popen_custom_model,
    system_mapping_fn,
    mapping_class_path,
    reaching_through_a_trusted_module,
]


def load_policy(path):
    return Policy.from_checkpoint(path)


def load_run(path):
    return TrainingRun.from_checkpoint(path, trainer_kwargs={"logger": False})


def load_module(path):
    return PPO.load_from_checkpoint(path)


LOADERS = [load_policy, load_run, load_module]


@pytest.mark.parametrize("make_edit", EDITS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("load", LOADERS, ids=lambda f: f.__name__)
def test_a_checkpoint_naming_code_is_refused_and_runs_nothing(good_checkpoint, tmp_path, make_edit, load):
    marker = tmp_path / "ran.marker"
    edit, name = make_edit(marker)
    path = edited(good_checkpoint, tmp_path, edit)
    if load is load_policy and make_edit.__name__ in HYPERPARAMETERS_ONLY:
        assert load(path).compute_single_action([0.0, 0.0, 0.0, 0.0]) in (0, 1)
        assert not marker.exists(), "the payload ran"
        return
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert name in str(info.value), str(info.value)
    assert "trusted_classes" in str(info.value), "the error says how to opt in"
    assert not marker.exists(), "the payload ran"


def test_the_cli_export_and_evaluate_commands_refuse_it_too(good_checkpoint, tmp_path, capsys):
    marker = tmp_path / "ran.marker"
    path = edited(good_checkpoint, tmp_path, popen_policy_class(marker)[0])
    assert cli_main(["export", "--ckpt_path", str(path), "--format", "torchscript"]) == 2
    assert "subprocess:Popen" in capsys.readouterr().err
    path = edited(good_checkpoint, tmp_path, popen_hparam_connector(marker)[0])
    assert cli_main(["evaluate", "--ckpt_path", str(path), "--episodes", "1"]) == 2
    assert "subprocess.Popen" in capsys.readouterr().err
    assert not marker.exists(), "the payload ran"


def test_a_module_named_by_the_file_is_not_even_imported(good_checkpoint, tmp_path, evil_module):
    module, imported = evil_module
    hparams = "hyper_parameters"
    edits = {
        "algorithm": lambda raw: raw["lightning_rl"].update(algorithm=f"{module}.Anything"),
        "policy class": lambda raw: recipe(raw).update(policy_class=f"{module}:Anything"),
        "connector": lambda raw: recipe(raw).update(env_to_module=[{"name": f"{module}:Anything"}]),
        "env": lambda raw: raw[hparams].update(env=f"{module}:Anything"),
        "gym id prefix": lambda raw: raw[hparams].update(env=f"{module}:Evil-v0"),
        "instantiator": lambda raw: raw[hparams].update(_instantiator=f"{module}.Anything"),
    }
    for what, edit in edits.items():
        path = edited(good_checkpoint, tmp_path, edit)
        for load in LOADERS:
            if load is load_policy and what in {"env", "gym id prefix", "instantiator"}:
                load(path)  # served from the recipe: the hyperparameters are never used
                continue
            with pytest.raises(CheckpointError, match=module):
                load(path)
        assert not imported.exists(), f"{what}: the module was imported"
        assert module not in sys.modules, what


def test_classic_pickle_payloads_are_refused_before_they_run(good_checkpoint, tmp_path):
    marker = tmp_path / "ran.marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    raw = torch.load(good_checkpoint, weights_only=True)
    for where in ("top", "hyper_parameters", "state_dict"):
        poisoned = copy.copy(raw)
        if where == "top":
            poisoned["payload"] = Payload()
        else:
            poisoned[where] = {**raw[where], "payload": Payload()}
        path = tmp_path / f"pickle-{where}.ckpt"
        torch.save(poisoned, path)  # full pickle: what an attacker would write
        for load in LOADERS:
            with pytest.raises(CheckpointError, match=r"pickled Python objects.*system"):
                load(path)
    assert not marker.exists(), "the pickle payload ran"


class Tiny(torch.nn.Module):
    """A user's own encoder: same layout as the default MLP, so the checkpoint's weights fit."""

    built = 0

    def __init__(self, observation_space, width: int = 64) -> None:
        super().__init__()
        Tiny.built += 1
        inputs = int(observation_space.shape[0])
        self.net = torch.nn.Sequential(
            torch.nn.Linear(inputs, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh()
        )
        self.out_dim = width

    def forward(self, obs):
        return self.net(obs)


TINY = f"{__name__}:Tiny"


def test_an_explicit_allow_list_opts_in_to_a_class(good_checkpoint, tmp_path, monkeypatch):
    """A user's own model by import path (its module imported, even): refused by default,
    loaded when the user allows it by argument or environment variable."""

    def edit(raw):
        recipe(raw)["policy_kwargs"]["model_config"]["custom_model"] = TINY

    path = edited(good_checkpoint, tmp_path, edit)
    Tiny.built = 0
    with pytest.raises(CheckpointError, match="test_checkpoint_names:Tiny"):
        Policy.from_checkpoint(path)
    assert Tiny.built == 0
    policy = Policy.from_checkpoint(path, trusted_classes=[Tiny])
    assert Tiny.built == 1 and policy.compute_single_action([0.0, 0.0, 0.0, 0.0]) in (0, 1)
    monkeypatch.setenv("LIGHTNING_RL_TRUSTED_CLASSES", TINY)
    Policy.from_checkpoint(path)
    assert Tiny.built == 2
