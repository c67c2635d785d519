"""The Python <-> PL/pgSQL boundary is checked: every key the SQL functions read from a JSON
argument (``a->>'numa_policy'``) is a field of the struct Python sends, and every column of a
``jsonb_to_recordset(...) AS x(col type, ...)`` is a field of that type. A renamed field
would otherwise read as NULL and silently drop whatever it constrained."""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from dataclasses import dataclass

import msgspec
import pytest

from sriov.common import schemas as m
from sriov.scheduler import validation as v
from sriov.scheduler.netdesc import NetSpec
from sriov.scheduler.projection import DeviceRow, HostRow
from sriov.scheduler.store import Outcome, functions_script

OPS = (v.PlaceArgs, v.ReleaseArgs, v.ConfirmArgs, v.ResetArgs)

#: (function, variable) -> what Python sends there; a key read must be a field of each.
READS: dict[tuple[str, str], tuple[type[msgspec.Struct], ...]] = {
    ("place", "a"): (v.PlaceArgs,),
    ("place", "n"): (NetSpec,),
    ("place", "x"): (NetSpec,),  # an element of a->'nets'
    ("place", "v_lead"): (NetSpec,),  # the net the walk follows
    ("no_capacity", "a"): (v.PlaceArgs,),
    ("no_capacity", "n"): (NetSpec,),
    ("no_capacity", "x"): (NetSpec,),
    ("place", "id"): (m.VfConfig,),  # v_cfgs->d.id: a VF's configuration
    ("can_serve", "n"): (NetSpec,),
    ("fits", "n"): (NetSpec,),
    ("vf_config", "n"): (NetSpec,),
    ("lacking", "n"): (NetSpec,),
    ("emit_desired", "a"): (*OPS, v.Context),
    ("emit_desired", "p_desired"): (v.DesiredArgs,),
    ("vacate", "p_desired"): (v.DesiredArgs,),
    ("vf_applied", "e"): (v.AppliedArgs,),
    ("vf_applied", "p_types"): (v.EventTypes,),
    ("cordon", "a"): (v.CordonArgs,),
    ("vf_reset", "a"): (v.ResetArgs,),
    ("vf_reset", "p_desired"): (v.DesiredArgs,),
    ("release", "a"): (v.ReleaseArgs,),
    ("confirm", "a"): (v.ConfirmArgs,),
    ("confirm", "v_reply"): (Outcome,),  # made by SQL, decoded by Python as an Outcome
    ("emit", "a"): (*OPS, v.Context),  # the operations; expire, apply_state, vf_applied: Context
    ("begin_request", "a"): OPS,
    ("finish_request", "a"): OPS,
    **{
        (f, "n"): (NetSpec,)  # a net: a parameter, or an element of p_nets or of a->'nets'
        for f in ("matches", "pick_vf", "pick_on_host", "pick_host", "check_id_net")
    },
}
#: (function, parameter) -> the element type of the JSON array read as typed records.
RECORDS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("apply_state", "p_devices"): DeviceRow,
    ("apply_state", "p_hosts"): HostRow,
}
SQL_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "integer": (int,),
    "bigint": (int,),
    "boolean": (bool,),
    "numeric": (int, float),
    "double precision": (int, float),
    "timestamptz": (dt.datetime,),
    "text[]": (list[str],),
}

_CREATE = "CREATE OR REPLACE FUNCTION scheduler."
_HEAD = re.compile(r"(\w+)\((.*?)\)\s*(?:RETURNS|LANGUAGE)", re.S)
_READ = re.compile(r"\b(\w+)->>?'(\w+)'")
_RECORDSET = re.compile(r"jsonb?_to_recordset\((\w+)\)\s+AS\s+\w+\(([^)]*)\)", re.S)


@dataclass(frozen=True)
class Function:
    name: str
    params: list[str]
    body: str


def functions(sql: str) -> list[Function]:
    """Each function's name, parameter names and body (what is between its ``$$``)."""
    found = []
    for chunk in sql.split(_CREATE)[1:]:
        head = _HEAD.match(chunk)
        assert head, f"cannot parse the function at {chunk[:60]!r}"
        name, params = head.groups()
        names = [p.split()[1] if p.split()[0] in ("OUT", "INOUT") else p.split()[0]
                 for p in params.split(",") if p.strip()]  # fmt: skip
        found.append(Function(name, names, chunk.split("$$")[1]))
    assert len(found) == sql.count(_CREATE) >= 18
    return found


def problems(sql: str) -> list[str]:
    """Every key or column the SQL reads that the Python side does not send."""
    out = []
    for fn in functions(sql):
        for var, key in _READ.findall(fn.body):
            sent = READS.get((fn.name, var))
            if sent is None:
                out.append(f"{fn.name}: {var}->'{key}': which struct is {var}? add it to READS")
                continue
            out += [
                f"{fn.name}: {var}->'{key}' is not a field of {t.__name__}"
                for t in sent
                if key not in t.__struct_fields__
            ]
        for param, columns in _RECORDSET.findall(fn.body):
            row = RECORDS.get((fn.name, param))
            if row is None:
                out.append(f"{fn.name}: records of {param}: which struct? add it to RECORDS")
                continue
            hints = typing.get_type_hints(row)
            for column in (c.strip() for c in columns.split(",")):
                name, sql_type = column.split(None, 1)
                if name not in hints:
                    out.append(f"{fn.name}: column {name} is not a field of {row.__name__}")
                elif not _fits(hints[name], SQL_TYPES[sql_type]):
                    out.append(f"{fn.name}: {name} {sql_type} but {row.__name__} has {hints[name]}")
    return out


def _fits(hint: object, accepted: tuple[type, ...]) -> bool:
    """``hint`` (maybe ``X | None``) is one of ``accepted`` (NULL is fine for any column)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return all(o is type(None) or o in accepted for o in options)


def test_every_key_the_sql_reads_is_a_field_of_what_python_sends() -> None:
    sql = functions_script()
    assert problems(sql) == []
    # and the tables describe the SQL as it is (an entry nothing reads is stale)
    fns = functions(sql)
    assert {(f.name, var) for f in fns for var, _key in _READ.findall(f.body)} == set(READS)
    assert {(f.name, p) for f in fns for p, _cols in _RECORDSET.findall(f.body)} == set(RECORDS)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("a->>'numa_policy'", "a->>'numa_polcy'", "a->'numa_polcy' is not a field of PlaceArgs"),
        ("n->>'selector'", "n->>'selectr'", "n->'selectr' is not a field of NetSpec"),
        ("a->>'source'", "a->>'origin'", "a->'origin' is not a field of PlaceArgs"),
        ("vf_index integer", "vf_idx integer", "column vf_idx is not a field of DeviceRow"),
        ("link_up boolean", "link_up text", "link_up text but DeviceRow has"),
        ("a->>'packing'", "q->>'packing'", "which struct is q?"),
    ],
)
def test_a_renamed_key_or_column_is_caught(before: str, after: str, expected: str) -> None:
    sql = functions_script()
    assert before in sql
    found = problems(sql.replace(before, after, 1))
    assert any(expected in p for p in found), found


def test_type_tags_are_parameters_not_text_spliced_into_the_sql() -> None:
    sql = functions_script()
    assert re.findall(r"@[A-Z_]+@", sql) == []
    emitters = {f.name: f.params for f in functions(sql) if "scheduler.emit(" in f.body}
    assert set(emitters) == {"place", "release", "confirm", "expire", "apply_state", "vf_applied"}
    # an event's tag is p_type (vf_applied: p_types, the tags of Ready and Failed); what writes
    # a desired state (directly or by vacating a VF) takes VfDesired's tag in p_desired
    assert all({"p_type", "p_types"} & set(params) for params in emitters.values()), emitters
    desired = {
        f.name: f.params
        for f in functions(sql)
        if re.search(r"scheduler\.(emit_desired|vacate)\(", f.body)
    }
    assert set(desired) == {"place", "release", "expire", "apply_state", "vf_applied", "vacate",
                            "vf_reset"}  # fmt: skip
    assert all(params[-1] == "p_desired" or params[-2:] == ["p_desired", "a"]
               for params in desired.values()), desired  # fmt: skip
    assert m.type_of(m.VfDesired) not in sql and m.type_of(m.Ready) not in sql
