"""Short, precise messages for the ``lightning-rl`` command's argument and config-file errors.

jsonargparse answers a misspelt ``--model.lamda`` or a ``lr: fast`` in a YAML file with the
whole usage text (about 60 lines) and a nested "does not validate against any of the Union
subtypes" report; a YAML syntax error names ``<unicode string>`` instead of the file. The CLI
runs its parser without exiting on errors and asks :func:`explain_parse_error` for one
message instead: the unknown key with its closest accepted names, or the key whose value has
the wrong type with the expected type, and where the key came from (the command line or which
config file). :func:`check_yaml_files` reads every config file first, so a syntax error names
the file, the line and the column.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_rl import registry
from lightning_rl.errors import ConfigError, LightningRLError

# Top-level keys of a ``fit``/``validate``/``test`` config (LightningCLI's subcommand parser).
TOP_LEVEL_KEYS = (
    "config",
    "print_config",
    "seed_everything",
    "trainer",
    "model",
    "data",
    "ckpt_path",
    "optimizer",
    "lr_scheduler",
)
_CONFIG_FLAGS = ("--config", "-c")
_GROUP_FILE_FLAGS = ("--model", "--trainer", "--data")


def config_files(argv: Sequence[str]) -> list[str]:
    """The YAML files named on the command line (``--config``, ``-c``, ``--model file.yaml`` ...)."""
    files = []
    for flag, value in flag_values(argv):
        if flag in _CONFIG_FLAGS or (flag in _GROUP_FILE_FLAGS and value.endswith((".yaml", ".yml"))):
            files.append(value)
    return files


def flag_values(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(flag, value)`` for every ``--flag value`` and ``--flag=value`` in ``argv``."""
    for i, arg in enumerate(argv):
        if arg.startswith("-") and "=" in arg:
            flag, value = arg.split("=", 1)
            yield flag, value
        elif arg.startswith("-") and i + 1 < len(argv):
            yield arg, argv[i + 1]


def check_yaml_files(argv: Sequence[str]) -> None:
    """Read every config file named in ``argv``; a YAML error names the file, line and column."""
    for name in config_files(argv):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"Config file {name!r} does not exist.")
        try:
            yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{name}, line {mark.line + 1}, column {mark.column + 1}" if mark else name
            detail = " ".join(part for part in (exc.context, exc.problem) if part)
            raise ConfigError(f"{where}: invalid YAML: {detail}.") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: invalid YAML: {exc}") from None


def init_parameters(cls: type) -> list[str]:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up its base classes
    (as jsonargparse does for the algorithms' ``super().__init__(..., **kwargs)``)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _suggestion(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"Did you mean {' or '.join(close)}?" if close else ""


class _Origin:
    """Where each dotted key came from: the command line or a config file."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.command_line: dict[str, str] = {}  # dotted key -> flag as typed
        for flag, _ in flag_values(argv):
            if flag.startswith("--") and "." in flag:
                self.command_line[_canonical(flag[2:])] = flag
        self.files: dict[str, dict[str, Any]] = {}
        for name in config_files(argv):
            try:
                loaded = yaml.safe_load(Path(name).read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(loaded, dict):
                self.files[name] = loaded

    def given(self) -> Iterator[tuple[str, str, Any]]:
        """``(dotted key, where, value)`` for every key given, command line first."""
        for key, flag in self.command_line.items():
            yield key, f"option {flag}", None
        for name, loaded in self.files.items():
            for key, value in _flatten(loaded):
                yield key, f"config file {name}", value

    def where(self, key: str) -> str:
        if key in self.command_line:
            return f"option {self.command_line[key]}"
        for name, loaded in self.files.items():
            if any(k == key for k, _ in _flatten(loaded)):
                return f"config file {name}"
        return "the arguments"


def _canonical(key: str) -> str:
    """``model.init_args.lr`` -> ``model.lr`` (both spellings mean the same argument)."""
    return re.sub(r"^model\.init_args\.", "model.", key)


def _flatten(config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        if key == "model" and isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub == "init_args" and isinstance(sub_value, dict):
                    for arg, arg_value in sub_value.items():
                        yield f"model.{arg}", arg_value
                elif sub not in ("class_path", "dict_kwargs"):
                    yield f"model.{sub}", sub_value
        elif key == "trainer" and isinstance(value, dict):
            for sub, sub_value in value.items():
                yield f"trainer.{sub}", sub_value
        else:
            yield str(key), value


def _model_class(origin: _Origin, argv: Sequence[str], message: str) -> type | None:
    match = re.search(r"class_path '([\w.]+)'", message)
    candidates = [match.group(1)] if match else []
    candidates += [value for flag, value in flag_values(argv) if flag == "--model"]
    for loaded in origin.files.values():
        model = loaded.get("model")
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            candidates.append(model["class_path"])
        elif isinstance(model, str):
            candidates.append(model)
    for name in candidates:
        try:
            return registry.get_algorithm_class(name)
        except LightningRLError:  # not a class name (a file, a typo): try the next one
            continue
    return None


def _unknown_key(origin: _Origin, model_class: type | None) -> str | None:
    import lightning.pytorch as pl  # only on the error path: `lightning-rl --help` stays instant

    trainer_keys = init_parameters(pl.Trainer)
    model_keys = init_parameters(model_class) if model_class is not None else None
    for key, where, _ in origin.given():
        group, _, name = key.partition(".")
        if group not in TOP_LEVEL_KEYS:
            hint = _suggestion(group, TOP_LEVEL_KEYS)
            return f"{where}: unknown key {group!r}. {hint}".strip()
        if not name or "." in name:
            continue  # nested below an argument (callbacks, logger init_args): jsonargparse's domain
        choices = trainer_keys if group == "trainer" else model_keys if group == "model" else None
        if choices is None or name in choices:
            continue
        hint = _suggestion(name, choices)
        if hint and where.startswith("option "):
            prefix = where[len("option ") :].rsplit(".", 1)[0]
            hint = (
                "Did you mean "
                + " or ".join(
                    f"{prefix}.{c}" for c in difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
                )
                + "?"
            )
        owner = "the Trainer" if group == "trainer" else model_class.__name__ if model_class else "the model"
        return f"{where}: {owner} has no argument {name!r}. {hint}".strip()
    return None


_TYPE = re.compile(r"<class '([\w.]+)'>|typing\.Literal\[(.*?)\]")
_TYPE_NAMES = {
    "NoneType": "null",
    "str": "a string",
    "int": "an integer",
    "float": "a float",
    "bool": "a boolean",
}


def _type_words(text: str) -> list[str]:
    words = []
    for klass, literal in _TYPE.findall(text):
        if klass:
            name = klass.rsplit(".", 1)[-1]
            words.append(_TYPE_NAMES.get(name, name))
        else:
            words.append(literal)
    return list(dict.fromkeys(words))


def _wrong_type(message: str, origin: _Origin) -> str | None:
    """``key expects <types>, got <value>`` from the innermost ``Parser key`` of the report."""
    lines = message.splitlines()
    found = [i for i, line in enumerate(lines) if re.search(r'Parser key "[\w.]+":', line)]
    if not found:
        return None
    first = found[-1]
    key = re.search(r'Parser key "([\w.]+)":', lines[first]).group(1)
    indent = len(lines[first]) - len(lines[first].lstrip())
    body = [lines[first]]
    for line in lines[first + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    detail = "\n".join(body)
    subtypes = re.search(r"Subtypes: \[(.*)\]", detail)
    expected = _type_words(subtypes.group(1) if subtypes else detail.split("Got value")[0])
    got = re.search(r"Got value: (.*)", detail) or re.search(r"Given value: (.*)", detail)
    if "class_path" in message[: message.find(lines[first])] and not key.startswith("model."):
        key = f"model.{key}"
    wanted = " or ".join(expected) or "another type"
    given = got.group(1).strip() if got else "?"
    where = origin.where(_canonical(key))
    subject = where if where.startswith("option ") else f"{where}: {key}"
    return f"{subject} expects {wanted}, got {given!r}."


def explain_parse_error(exc: BaseException, argv: Sequence[str]) -> str:
    """One short message for a jsonargparse parse error of ``lightning-rl <subcommand> ...``."""
    message = str(exc)
    origin = _Origin(argv)
    model_class = _model_class(origin, argv, message)
    unknown = _unknown_key(origin, model_class)
    if unknown:
        return unknown
    if "Problems parsing config" in message:
        return message.replace('"<unicode string>"', "the config").splitlines()[0]
    wrong = _wrong_type(message, origin)
    if wrong:
        return wrong
    unrecognized = re.search(r"unrecognized arguments: (.*)", message, re.IGNORECASE)
    if unrecognized:
        return f"unrecognized arguments: {unrecognized.group(1)}"
    lines = [line for line in message.splitlines() if line.strip()]
    return "\n".join(lines[:6])
