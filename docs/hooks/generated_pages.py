"""mkdocs hook: pages generated from the code at build time, so they cannot go stale.

* ``algorithms.md``: every built-in algorithm (the ``lightning_rl.algorithms`` entry points in
  ``pyproject.toml``) with its hyperparameters, defaults and docstring descriptions; the
  settings every algorithm shares (``Algorithm.__init__``); ``model_config`` keys (the fields
  of ``DefaultModelConfig`` with the comments above them); the built-in connectors.
* ``benchmarks.md``: the JSON results under ``benchmarks/results/`` as tables, and the scripts
  in ``benchmarks/`` with their usage.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


# -- docstrings and signatures ---------------------------------------------------------------
def docstring_args(obj: Any) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: ``{name: description}``.

    An entry may name several arguments (``a, b, c: shared description``).
    """
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return {}
    entries: dict[str, str] = {}
    current: list[str] = []
    pending = ""  # names of an entry whose name list continues on the next line ("a, b,")
    indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break
        if indent is None:
            indent = depth
        text = line.strip()
        if depth == indent and re.fullmatch(r"[\w, ]+,", text):
            pending += text + " "
            continue
        match = re.match(r"^([\w, ]+?):\s*(.*)$", pending + text) if depth == indent else None
        pending = ""
        if match:
            current = [name.strip() for name in match.group(1).split(",") if name.strip()]
            for name in current:
                entries[name] = match.group(2).strip()
        elif current:
            for name in current:
                entries[name] = f"{entries[name]} {text}".strip()
    return {name: rst_to_markdown(text) for name, text in entries.items()}


def rst_to_markdown(text: str) -> str:
    """Docstrings use reST roles (:class:`~a.B`) and ``literals``; markdown wants `B`."""
    text = re.sub(r":\w+:`~([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = re.sub(r":\w+:`([\w.]+)`", r"`\1`", text)
    return text.replace("``", "`")


def own_parameters(cls: type) -> list[inspect.Parameter]:
    """Keyword parameters of ``cls.__init__`` (not ``self``, ``env``, ``env_config``, ``**kwargs``)."""
    skip = {"self", "env", "env_config"}
    return [
        p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in skip
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]


def algorithm_parameters(cls: type, base: type) -> list[inspect.Parameter]:
    """Settings ``cls`` adds over ``base``, inherited ones included.

    A subclass (MARWIL over BC, APPO over IMPALA) forwards its parent's settings through
    ``**kwargs``, so its own signature alone would hide them; walk the MRO down to ``base``.
    """
    seen: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is base or not issubclass(klass, base):
            break
        if "__init__" not in vars(klass):
            continue
        for param in own_parameters(klass):
            seen.setdefault(param.name, param)
        if not any(
            p.kind is inspect.Parameter.VAR_KEYWORD
            for p in inspect.signature(klass.__init__).parameters.values()
        ):
            break
    return list(seen.values())


def inherited_docs(cls: type, base: type) -> list[dict[str, str]]:
    return [
        docstring_args(k)
        for k in cls.__mro__
        if k is not base and isinstance(k, type) and issubclass(k, base)
    ]


def cell(text: str) -> str:
    """Table-cell text: pipes escaped, except inside code spans (where the table parser keeps them)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def default_text(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        return "required"
    return f"`{param.default!r}`"


def parameter_table(params: list[inspect.Parameter], *docs: dict[str, str]) -> list[str]:
    rows = ["| Setting | Default | Description |", "|---|---|---|"]
    for param in params:
        description = next((d[param.name] for d in docs if param.name in d), "")
        rows.append(f"| `{param.name}` | {cell(default_text(param))} | {cell(description) or '—'} |")
    return rows


def first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return rst_to_markdown(doc.split("\n\n")[0].replace("\n", " ").strip())


def entry_points(group: str) -> dict[str, str]:
    """``{name: "module:attr"}`` of one entry-point group in the project's own pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project.get("entry-points", {}).get(group, {}))


def load(target: str) -> Any:
    from lightning_rl._imports import import_object

    return import_object(target)


def model_config_rows() -> list[str]:
    """``DefaultModelConfig`` fields with their defaults and the comment lines above them."""
    from lightning_rl.modules.model_config import DefaultModelConfig

    source = inspect.getsource(DefaultModelConfig)
    tree = ast.parse(source)
    lines = source.splitlines()
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    defaults = DefaultModelConfig().to_dict()
    for node in tree.body[0].body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        comments = []
        line = node.lineno - 2
        while line >= 0 and lines[line].strip().startswith("#"):
            comments.insert(0, lines[line].strip().lstrip("#").strip())
            line -= 1
        name = node.target.id
        rows.append(f"| `{name}` | `{defaults[name]!r}` | {cell(' '.join(comments)) or '—'} |")
    return rows


def algorithms_page() -> str:
    from lightning_rl.algorithms.base import Algorithm

    common = docstring_args(Algorithm)
    out = [
        "# Algorithms and hyperparameters",
        "",
        "Generated from the code at docs build time: each table lists the keyword arguments of the",
        "algorithm's `__init__` (which are its whole config: `PPO(env, lr=...)`, `--model.lr` on the",
        "CLI, `PPOConfig().training(lr=...)` in the fluent config) with defaults and docstrings.",
        "",
    ]
    for name, target in sorted(entry_points("lightning_rl.algorithms").items()):
        cls = load(target)
        out += [f"## {name}", "", first_paragraph(cls), "", f"`{target.replace(':', '.')}`", ""]
        out += parameter_table(algorithm_parameters(cls, Algorithm), *inherited_docs(cls, Algorithm), common)
        out += ["", "Plus every [common setting](#common-settings).", ""]
    out += [
        "## Common settings",
        "",
        "Every algorithm accepts these (env, EnvRunners, connectors, evaluation, model, fault tolerance).",
        "",
    ]
    out += parameter_table(own_parameters(Algorithm), common)
    out += [
        "",
        "## model_config",
        "",
        "Keys of `model_config` (RLlib's `DefaultModelConfig` names); pass any subset as a dict.",
        "",
        *model_config_rows(),
        "",
        "## Connectors",
        "",
        "Built-in connectors, usable by name in `env_to_module_connector` / `module_to_env_connector`.",
        "",
        "| Name | What it does |",
        "|---|---|",
    ]
    for name, target in sorted(entry_points("lightning_rl.connectors").items()):
        out.append(f"| `{name}` | {cell(first_paragraph(load(target)))} |")
    return "\n".join(out) + "\n"


# -- benchmarks ------------------------------------------------------------------------------
def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return cell(json.dumps(value) if isinstance(value, list | dict) else str(value))


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON object, a JSON list of objects, or JSON lines (one benchmark run per line)."""
    text = path.read_text().strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    records = data if isinstance(data, list) else [data]
    return [flatten(r) for r in records if isinstance(r, dict)]


def results_table(records: list[dict[str, Any]]) -> list[str]:
    if len(records) == 1:
        rows = ["| Key | Value |", "|---|---|"]
        rows += [f"| `{k}` | {value_text(v)} |" for k, v in records[0].items()]
        return rows
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    rows = ["| " + " | ".join(f"`{c}`" for c in columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        rows.append("| " + " | ".join(value_text(record[c]) if c in record else "" for c in columns) + " |")
    return rows


def benchmarks_page() -> str:
    out = [
        "# Benchmarks",
        "",
        "Every script in `benchmarks/` prints one JSON object as its last line. Results saved under",
        "`benchmarks/results/` (one JSON object, a JSON list, or JSON lines per file) appear below,",
        "generated at docs build time.",
        "",
        "## Results",
        "",
    ]
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    if not results:
        out += [
            '!!! note "Placeholder: no results checked in yet"',
            "    No file exists under `benchmarks/results/`, so there are no measured figures to show.",
            "    Run a script below and save its last line, e.g. `python benchmarks/ppo_cartpole.py",
            "    --seed 0 | tail -n 1 > benchmarks/results/ppo_cartpole.json`.",
            "",
        ]
    for path in results:
        out += [f"### {path.stem}", "", f"From `benchmarks/results/{path.name}`.", ""]
        out += [*results_table(read_records(path)), ""]
    scripts = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    if scripts:
        out += ["## Scripts", ""]
    for script in scripts:
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        summary, _, rest = doc.partition("\n\n")
        out += [f"### `{script.name}`", "", summary.replace("\n", " "), ""]
        usage = rest.split("\n\n")[0] if rest.startswith("    ") else ""
        if usage:
            # A backslash line continuation in a docstring arrives as a run of spaces.
            out += ["```bash", re.sub(r" {2,}", " ", inspect.cleandoc(usage)), "```", ""]
    return "\n".join(out) + "\n"


# -- mkdocs events ---------------------------------------------------------------------------
GENERATED = {"algorithms.md": algorithms_page, "benchmarks.md": benchmarks_page}


def on_files(files: Files, config: Any) -> Files:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for name, build in GENERATED.items():
        files.append(File.generated(config, name, content=build()))
    return files
