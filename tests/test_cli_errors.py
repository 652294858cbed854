"""What ``lightning-rl`` tells a newcomer: the command list, and one short line per mistake.

Each case runs the real ``main([...])`` (LightningCLI and jsonargparse underneath); mistakes are
found while parsing, so nothing trains. Before, every case printed jsonargparse's usage text
(about 60 lines) with a nested "does not validate against any of the Union subtypes" report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_rl.cli import main

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = str(REPO / "configs" / "ppo" / "cartpole.yaml")
PPO_YAML = """\
trainer:
  max_epochs: 1
model:
  class_path: lightning_rl.algorithms.ppo.PPO
  init_args:
    env: CartPole-v1
{extra}"""


def run_main(args, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lightning-rl"])  # main() rewrites sys.argv for DDP
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def config(tmp_path, extra: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(PPO_YAML.format(extra=extra))
    return str(path)


def assert_short(err: str) -> None:
    assert "usage:" not in err and "Union subtypes" not in err, err
    assert len(err.strip().splitlines()) <= 3, err


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"]])
def test_help_lists_every_command_with_one_line(args, capsys, monkeypatch):
    code, out, _ = run_main(args, capsys, monkeypatch)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    for command in ("fit", "validate", "test", "evaluate", "export", "plot", "list"):
        assert command in lines and len(lines[command].split()) > 3, f"{command} has no one-line help: {out}"
    assert "predict" not in lines


def test_a_misspelt_option_names_the_close_match(capsys, monkeypatch):
    code, _, err = run_main(["fit", "--config", CARTPOLE, "--model.lamda", "0.9"], capsys, monkeypatch)
    assert code == 2
    assert "option --model.lamda" in err and "did you mean --model.lambda_" in err.lower()
    assert_short(err)


def test_a_misspelt_trainer_key_in_a_config_file_names_the_file_and_the_close_match(
    tmp_path, capsys, monkeypatch
):
    path = tmp_path / "trainer.yaml"
    path.write_text(PPO_YAML.format(extra="").replace("max_epochs", "max_epohcs"))
    code, _, err = run_main(["fit", "--config", str(path)], capsys, monkeypatch)
    assert code == 2
    assert str(path) in err and "'max_epohcs'" in err and "max_epochs" in err
    assert_short(err)


def test_an_unknown_key_in_a_config_file_names_the_close_match(tmp_path, capsys, monkeypatch):
    path = config(tmp_path, "    lrr: 0.001\n")
    code, _, err = run_main(["fit", "--config", path], capsys, monkeypatch)
    assert code == 2
    assert path in err and "PPO has no argument 'lrr'" in err and "Did you mean lr?" in err
    assert_short(err)


def test_a_wrong_type_in_a_config_file_names_the_expected_type(tmp_path, capsys, monkeypatch):
    path = config(tmp_path, "    lr: fast\n")
    code, _, err = run_main(["fit", "--config", path], capsys, monkeypatch)
    assert code == 2
    assert path in err and "model.lr expects a float, got 'fast'" in err
    assert_short(err)


def test_a_wrong_type_on_the_command_line_names_the_choices(tmp_path, capsys, monkeypatch):
    args = ["fit", "--config", config(tmp_path, ""), "--model.rollout_fragment_length", "many"]
    code, _, err = run_main(args, capsys, monkeypatch)
    assert code == 2
    assert "option --model.rollout_fragment_length expects an integer or 'auto', got 'many'" in err
    assert_short(err)


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path, capsys, monkeypatch):
    path = config(tmp_path, "   lr: [0.1\n")  # bad indentation and an unclosed list on line 7
    code, _, err = run_main(["fit", "--config", path], capsys, monkeypatch)
    assert code == 2
    assert f"{path}, line 7" in err and "invalid YAML" in err and "<unicode string>" not in err
    assert_short(err)


def test_a_missing_config_file_is_named(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "nope.yaml")
    code, _, err = run_main(["fit", "--config", missing], capsys, monkeypatch)
    assert code == 2 and f"Config file {missing!r} does not exist" in err


def test_predict_is_not_offered_and_says_what_to_use(capsys, monkeypatch):
    code, _, err = run_main(["predict", "--config", CARTPOLE], capsys, monkeypatch)
    assert code == 2
    assert "'predict' is not offered" in err and "lightning-rl evaluate" in err


def test_an_unknown_command_suggests_the_close_one(capsys, monkeypatch):
    code, _, err = run_main(["fitt", "--config", CARTPOLE], capsys, monkeypatch)
    assert code == 2 and "unknown command 'fitt'" in err and "Did you mean 'fit'" in err
