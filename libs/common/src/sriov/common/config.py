"""Typed settings from YAML files and environment variables, via msgspec.

Errors name the file, line and key (``host.conf:7: sriov_nics[1]: expected str, got int``)
or the environment variable, so an operator can fix them without reading code. Settings
Structs should be declared with ``forbid_unknown_fields=True`` so a typo is an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from sriov.common.errors import ConfigError

S = TypeVar("S")
PathKey = tuple[str | int, ...]


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base for settings Structs: unknown keys are errors."""


def _walk(
    node: yaml.Node, path: PathKey, lines: dict[PathKey, int], seen: set[int] | None = None
) -> None:
    # An alias can make the node graph cyclic (``a: &x [*x]``): visit each node once.
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines, seen)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, seen)


def load_yaml(path: Path | str) -> tuple[Any, dict[PathKey, int]]:
    """Parse a YAML file; return the data and the line of every key and list item."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: file not found", file=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}", file=str(p)) from exc
    return parse_yaml(text, str(p))


def parse_yaml(text: str, source: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError as exc:
        raise ConfigError(f"{source}: a YAML alias refers to itself", file=source) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{source}{line}: not valid YAML: {exc.problem or exc}", file=source
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}", file=source) from exc
    lines: dict[PathKey, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


_PATH_PART = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[\"?([^\]\"]+)\"?\]")


def parse_json_path(text: str) -> PathKey:
    """``$.networks[1].ip`` -> ("networks", 1, "ip")."""
    out: list[str | int] = []
    for m in _PATH_PART.finditer(text.removeprefix("$")):
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            out.append(m.group(3))
    return tuple(out)


def format_path(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def locate(source: str, lines: Mapping[PathKey, int], path: PathKey) -> str:
    """``file:line`` of the deepest known prefix of ``path``."""
    for n in range(len(path), -1, -1):
        line = lines.get(path[:n])
        if line is not None:
            return f"{source}:{line}"
    return source


def convert(
    data: Any, cls: type[S], *, source: str, lines: Mapping[PathKey, int] | None = None
) -> S:
    """Validate ``data`` into ``cls``; errors name ``source:line: key: problem``."""
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        problem, _, where = text.partition(" - at `")
        path = parse_json_path(where.rstrip("`")) if where else ()
        m = re.match(r"Object contains unknown field `([^`]+)`", problem)
        if m:
            path = (*path, m.group(1))
            problem = "unknown key (check its spelling)"
        m = re.match(r"Object missing required field `([^`]+)`", problem)
        if m:
            path = (*path, m.group(1))
            problem = "required key is missing"
        loc = locate(source, lines or {}, path)
        raise ConfigError(
            f"{loc}: {format_path(path)}: {problem}", file=source, key=format_path(path)
        ) from exc


def load_file(path: Path | str, cls: type[S]) -> S:
    data, lines = load_yaml(path)
    return convert(data if data is not None else {}, cls, source=str(path), lines=lines)


def from_env(
    cls: type[S],
    prefix: str = "SRIOV_",
    env: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
    **overrides: Any,
) -> S:
    """Build settings from ``<prefix><FIELD>`` variables; ``overrides`` (non-None) win.

    ``options`` names the command-line option of a field where it is not ``--<field>``, so an
    error names what the operator typed."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):  # type: ignore[arg-type]
        var = prefix + f.encode_name.upper()
        if var in env:
            raw = env[var]
            try:
                data[f.encode_name] = msgspec.json.decode(raw) if _looks_json(raw) else raw
            except msgspec.DecodeError:
                data[f.encode_name] = raw
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `")
        path = parse_json_path(where.rstrip("`")) if where else ()
        key = str(path[0]) if path else "?"
        m = re.match(r"Object missing required field `([^`]+)`", problem)
        if m:
            key, problem = m.group(1), "is required"
        option = (options or {}).get(key) or f"--{key.replace('_', '-')}"
        raise ConfigError(
            f"setting {key} (environment variable {prefix}{key.upper()} or option "
            f"{option}): {problem}",
            key=key,
        ) from exc


def _looks_json(raw: str) -> bool:
    return raw[:1] in "[{" or raw in ("true", "false", "null")
