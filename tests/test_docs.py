"""The docs site builds with warnings as errors, and the config calls it shows are valid."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TESTED_SNIPPET = re.compile(r"<!-- docs-test: config -->\s*```python\n(.*?)```", re.DOTALL)


def test_mkdocs_build_strict_passes_and_generates_the_reference_pages(tmp_path):
    mkdocs = shutil.which("mkdocs")
    cmd = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    proc = subprocess.run(
        [*cmd, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    algorithms = (tmp_path / "site" / "algorithms" / "index.html").read_text()
    assert "clip_param" in algorithms and "num_env_runners" in algorithms and "fcnet_hiddens" in algorithms
    assert "MeanStdFilter" in algorithms
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "ppo_cartpole.py" in benchmarks
    for page in ("getting-started", "rllib-migration", "inference", "monitoring", "plugins", "architecture"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def config_snippets() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        found += [(page.name, code) for code in TESTED_SNIPPET.findall(page.read_text())]
    return found


@pytest.mark.parametrize(("page", "code"), config_snippets(), ids=lambda v: v if v.endswith(".md") else "")
def test_config_snippets_in_the_docs_build_an_algorithm(page, code):
    namespace: dict = {}
    exec(compile(code.replace("algo = config.build_algo()", ""), page, "exec"), namespace)
    config = namespace["config"]
    algorithm = config.build_algorithm()
    assert algorithm.hparams.env == "CartPole-v1"
    config.build_trainer_kwargs()


def test_the_snippets_are_found():
    assert {page for page, _ in config_snippets()} == {"getting-started.md", "rllib-migration.md"}
