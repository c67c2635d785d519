"""The guide's netdesc forms, and errors that show the accepted forms."""

from __future__ import annotations

import pytest

from sriov.common.errors import InvalidRequest
from sriov.scheduler.netdesc import NetSpec, parse

I350 = "I350 Ethernet Controller Virtual Function"


@pytest.mark.parametrize(
    ("desc", "expected"),
    [
        (f"sriov-nic-model={I350}", NetSpec(desc=f"sriov-nic-model={I350}", kind="model",
                                             value=I350)),
        (f"sriov-nic-model={I350}:8056e77e-dc14-44b5-8ef9-e43aff344c0d",
         NetSpec(desc=f"sriov-nic-model={I350}:8056e77e-dc14-44b5-8ef9-e43aff344c0d",
                 kind="model", value=I350, selector="8056e77e-dc14-44b5-8ef9-e43aff344c0d")),
        ("sriov-nic-id=37b2fe7b-f202-428e-8c34-35ccdac82852",
         NetSpec(desc="sriov-nic-id=37b2fe7b-f202-428e-8c34-35ccdac82852", kind="id",
                 value="37b2fe7b-f202-428e-8c34-35ccdac82852")),
        ("  sriov-nic-id=abc:bcast1 ", NetSpec(desc="sriov-nic-id=abc:bcast1", kind="id",
                                               value="abc", selector="bcast1")),
    ],
)  # fmt: skip
def test_accepted_forms(desc: str, expected: NetSpec) -> None:
    assert parse(desc) == expected


@pytest.mark.parametrize(
    ("desc", "says"),
    [
        ("", "empty net"),
        ("I350", "is not a netdesc"),
        ("sriov-nic-type=I350", "is not a netdesc"),
        ("sriov-nic-model=", "names no model"),
        ("sriov-nic-id=  ", "names no id"),
        ("sriov-nic-model=I350:", "names no network or wire"),
        ("sriov-nic-model=I3\x0050", "control characters"),
        ("sriov-nic-model=" + "x" * 600, "longer than"),
    ],
)
def test_errors_name_the_field_and_the_forms(desc: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(desc, "nets[2].desc")
    assert says in str(err.value)
    assert str(err.value).startswith("nets[2].desc: ")
    assert err.value.details["field"] == "nets[2].desc"
