"""The README's benchmark table is generated from benchmarks/results, so it cannot go stale."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return load("report")


def test_readme_table_is_what_the_results_folder_generates(report):
    readme = report.README.read_text()
    records = report.load_records()
    assert records, "benchmarks/results holds the measured figures"
    assert report.render_readme(readme, records) == readme, (
        "README.md's benchmark table differs from benchmarks/results: run python benchmarks/report.py"
    )
    for record in records:
        assert record["command"].startswith("python benchmarks/") and record["date"]


def test_every_figure_comes_from_the_newest_record_of_its_command(report, tmp_path):
    machine = {"cpu_model": "Test CPU", "cpu_cores": 2, "usable_cores": 2, "gpu": None, "torch": "9.9"}

    def record(seed: int, date: str, steps: int, load: float) -> dict:
        result = {
            "reached": True,
            "env_steps_to_target": steps,
            "seconds_to_target": 10.0,
            "reached_rolling": False,
        }
        return {
            "command": f"python benchmarks/ppo_cartpole.py --seed {seed}",
            "date": date,
            "machine": machine,
            "load_1m_start": load,
            "load_1m_end": load,
            "result": result,
        }

    lines = [
        record(0, "2030-01-01T00:00:00Z", 99_999, 1.0),  # superseded by the rerun below
        record(0, "2030-01-02T00:00:00Z", 1_000, 1.0),
        record(1, "2030-01-02T00:00:00Z", 2_000, 3.5),
    ]
    (tmp_path / "ppo_cartpole.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    table = report.render_table(report.load_records(tmp_path))
    rows = table.splitlines()[2:]
    assert len(rows) == 1, "rows without records are left out"
    assert "`--seed 0,1`" in rows[0] and "1,000\u20132,000 env steps" in rows[0] and "99,999" not in rows[0]
    assert "Test CPU, 2 cores, torch 9.9; load ≤ 3.5 (cores shared with other jobs" in rows[0]
    assert rows[0].endswith("| 2030-01-02 |")

    readme = f"intro\n{report.BEGIN}\nold table\n{report.END}\nafter\n"
    assert report.render_readme(readme, report.load_records(tmp_path)) == (
        f"intro\n{report.BEGIN}\n{table}\n{report.END}\nafter\n"
    )
    (tmp_path / "broken.json").write_text('{"figure": 1}\n')
    with pytest.raises(ValueError, match=r"broken\.json:1 is not a benchmark record"):
        report.load_records(tmp_path)


def test_a_by_date_row_names_only_the_records_its_figure_still_shows(report):
    def record(date: str, cpu: str, tasks: list[str]) -> dict:
        return {"date": date, "machine": {"cpu_model": cpu}, "result": {"tasks": {key: {} for key in tasks}}}

    old = record("2030-01-01T00:00:00Z", "Old CPU", ["ppo", "ppo_in_process"])
    partly_replaced = record("2030-01-02T00:00:00Z", "Mid CPU", ["ppo", "dqn"])
    newest = record("2030-01-03T00:00:00Z", "New CPU", ["ppo", "ppo_in_process", "sac"])
    assert report._still_shown([old, partly_replaced, newest]) == [partly_replaced, newest]
    assert report._still_shown([old, newest]) == [newest]
    assert report._still_shown([newest]) == [newest]


def test_emit_saves_the_result_with_command_date_and_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    common = load("_common")
    monkeypatch.setenv("LIGHTNING_RL_BENCHMARK_RESULTS", str(tmp_path))
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "ppo_cartpole.py"), "--seed", "3"])
    common.emit({"env_steps": 5})
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"env_steps": 5}
    (saved,) = (tmp_path / "ppo_cartpole.json").read_text().splitlines()
    saved = json.loads(saved)
    assert saved["command"] == "python benchmarks/ppo_cartpole.py --seed 3"
    assert saved["result"] == {"env_steps": 5} and saved["date"].endswith("Z")
    assert saved["machine"]["cpu_cores"] >= 1 and saved["machine"]["torch"]
    assert saved["load_1m_end"] >= 0


def test_the_gpu_row_names_the_commit_whose_readme_config_it_trained(report, tmp_path):
    """The shipped PPO config changes over time; a GPU run's CartPole figures say which one."""
    check = {
        "ok": True,
        "result": {"learner_device": "cpu", "seconds_to_target": 20.0, "seconds_to_rolling": 30.0},
    }
    record = {
        "command": "python benchmarks/gpu_checks.py --log /root/out/gpu_checks.log",
        "date": "2030-01-01T00:00:00Z",
        "git_commit": "abc1234",
        "machine": {"cpu_model": "Test CPU", "cpu_cores": 16, "usable_cores": 16, "gpu": "H", "torch": "9.9"},
        "load_1m_start": 1.0,
        "load_1m_end": 1.0,
        "result": {"checks": {"ppo_cartpole_in_process": check}},
    }
    (tmp_path / "gpu_checks.json").write_text(json.dumps(record) + "\n")
    (row,) = report.render_table(report.load_records(tmp_path)).splitlines()[2:]
    assert "README config as of abc1234 to evaluation 475" in row and "20.0 / 30.0 s" in row
