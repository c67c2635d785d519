"""Typed settings from YAML files and environment variables, via msgspec.

Errors name the file, line and key (``host.conf:7: sriov_nics[1]: expected str, got int``)
or the environment variable, so an operator can fix them without reading code. Settings
Structs derive from :class:`Settings` (unknown keys are errors, so a typo shows up). A
service's settings also come from ``--options`` and ``SRIOV_<FIELD>`` variables, each declared
once on its field with :func:`option` (see "options and environment" below).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Self,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

import msgspec

from sriov.common.errors import ConfigError

if TYPE_CHECKING:
    import yaml

S = TypeVar("S")
PathKey = tuple[str | int, ...]


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base for settings Structs: unknown keys are errors."""

    def check(self) -> Self:
        """Checks across fields or beyond a field's limits; raise ConfigError. Returns self."""
        return self


SettingsT = TypeVar("SettingsT", bound=Settings)


def _walk(
    node: yaml.Node, path: PathKey, lines: dict[PathKey, int], seen: set[int] | None = None
) -> None:
    # An alias can make the node graph cyclic (``a: &x [*x]``): visit each node once.
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    import yaml  # already loaded by parse_yaml

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
    # imported here: every sriovctl run loads this module, and most never read a YAML file
    import yaml

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


# --- options and environment ----------------------------------------------------------------
# A settings field declares its option, help and limits once, in its annotation:
#     reservation_ttl_s: Annotated[float, option("seconds before ...", gt=0,
#                                                flag="--reservation-ttl")] = 300.0
# and the same declaration gives the ``--option``, the ``SRIOV_<FIELD>`` variable, the range
# check and an error that names both as the operator typed them.


def option(help: str, *, flag: str | None = "", **limits: Any) -> msgspec.Meta:
    """The metadata of one setting: its help, its limits (``ge``, ``gt``, ``le``, ``lt``,
    ``min_length``...) and its option (default ``--<field-name>``; None: environment only)."""
    return msgspec.Meta(description=help, extra={"flag": flag}, **limits)


def _meta(cls: type[Any], name: str) -> msgspec.Meta | None:
    hint = get_type_hints(cls, include_extras=True).get(name)
    found = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, msgspec.Meta)]
    return found[-1] if found else None


def flag_of(cls: type[Any], name: str) -> str | None:
    """The option that sets field ``name`` (``--reservation-ttl``), or None if it has none."""
    meta = _meta(cls, name)
    flag = (meta.extra or {}).get("flag", "") if meta is not None else ""
    return "--" + name.replace("_", "-") if flag == "" else flag


def _limits(cls: type[Any], name: str) -> str | None:
    meta = _meta(cls, name)
    if meta is None:
        return None
    low, high = meta.ge if meta.ge is not None else meta.gt, meta.le
    if low is not None and high is not None:
        return f"use {low:g} to {high:g}"
    if meta.ge is not None:
        return f"must be at least {meta.ge:g}"
    if meta.gt is not None:
        return f"must be greater than {meta.gt:g}"
    if high is not None:
        return f"must be at most {high:g}"
    return None


def setting_error(
    cls: type[Any], name: str, problem: str, value: Any = None, prefix: str = "SRIOV_"
) -> ConfigError:
    """``--reservation-ttl (SRIOV_RESERVATION_TTL_S) is soon: expected float``: the option
    and the variable as the operator wrote them, the value, and what would be accepted."""
    flag, var = flag_of(cls, name), prefix + name.upper()
    where = f"{flag} ({var})" if flag else var
    shown = "empty" if value == "" else str(value)
    text = f"{where} is required" if value is None else f"{where} is {shown}: {problem}"
    return ConfigError(text, key=name)


def _problem(cls: type[Any], name: str, msgspec_text: str) -> str:
    if re.match(r"Expected `\w+` [<>]", msgspec_text):  # a limit, not a type
        return _limits(cls, name) or msgspec_text
    m = re.match(r"Expected `([^`]+)`", msgspec_text)
    return f"expected {m.group(1)}" if m else msgspec_text


def from_env(
    cls: type[S],
    prefix: str = "SRIOV_",
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> S:
    """Build settings from ``<prefix><FIELD>`` variables; ``overrides`` (non-None) win."""
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
        m = re.match(r"Object missing required field `([^`]+)`", problem)
        if m:
            raise setting_error(cls, m.group(1), "", None, prefix) from exc
        key = str(path[0]) if path else "?"
        raise setting_error(cls, key, _problem(cls, key, problem), data.get(key), prefix) from exc


def _looks_json(raw: str) -> bool:
    return raw[:1] in "[{" or raw in ("true", "false", "null")


def add_options(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One option per field of ``cls`` that has one, grouped by the class declaring it.

    Options take strings and have no default: the value is converted, checked and
    reported by :func:`from_args` like an environment variable's."""
    for owner in reversed(cls.__mro__):
        own = getattr(owner, "__annotations__", {})
        fields = [f for f in msgspec.structs.fields(cls) if f.name in own]  # type: ignore[arg-type]
        if not fields or not issubclass(owner, Settings):
            continue
        title = (owner.__doc__ or owner.__name__).strip().splitlines()[0]
        group = parser.add_argument_group(title)
        for f in fields:
            flag = flag_of(cls, f.name)
            if not flag:
                continue
            meta = _meta(cls, f.name)
            help = meta.description if meta is not None and meta.description else ""
            default = "" if f.required or f.default in (None, msgspec.NODEFAULT) else f.default
            shown = f"default {default}; " if default not in ("", False) else ""
            help = f"{help} ({shown}SRIOV_{f.name.upper()})".strip()
            kind = get_args(f.type)[0] if get_origin(f.type) is Annotated else f.type
            if kind is bool:
                group.add_argument(flag, dest=f.name, action="store_true", default=None, help=help)
            else:
                group.add_argument(flag, dest=f.name, help=help)


def from_args(cls: type[SettingsT], args: argparse.Namespace, **base: Any) -> SettingsT:
    """Settings from the environment, then ``base`` (non-None), then the options given,
    checked (``Settings.check``)."""
    given = {k: v for k, v in vars(args).items() if k in cls.__struct_fields__}
    layers = [base, given]
    merged = {k: v for layer in layers for k, v in layer.items() if v is not None}
    return from_env(cls, **merged).check()


def argument_parser(cls: type[Any], prog: str, description: str) -> argparse.ArgumentParser:
    """A service's command line: the options of its settings' fields."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_options(parser, cls)
    return parser


def parse_args(
    cls: type[SettingsT], argv: Sequence[str] | None, *, prog: str, description: str
) -> SettingsT:
    """A service's settings from its command line and environment, checked."""
    return from_args(cls, argument_parser(cls, prog, description).parse_args(argv))
