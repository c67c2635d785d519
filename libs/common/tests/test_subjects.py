"""Subject building: escaping is lossless, hostile tokens are refused, never mangled."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sriov.common import subjects as s
from sriov.common.errors import InvalidRequest

hexd = st.sampled_from("0123456789abcdefABCDEF")
pci = st.builds(
    lambda d, b, dv, f: f"{d}:{b}:{dv}.{f}",
    st.text(hexd, min_size=4, max_size=4),
    st.text(hexd, min_size=2, max_size=2),
    st.text(hexd, min_size=2, max_size=2),
    st.integers(0, 7),
)


@given(pci)
def test_pci_escape_is_lossless_and_subject_safe(addr: str) -> None:
    tok = s.pci_token(addr)
    assert s.pci_from_token(tok) == addr.lower()
    assert s.token(tok) == tok
    subject = s.device_state("host-1", addr).subject
    assert subject.count(".") == 6
    assert " " not in subject
    assert "*" not in subject
    assert ">" not in subject


@given(st.text(min_size=1, max_size=40))
def test_tokens_with_subject_syntax_are_refused(value: str) -> None:
    bad = any(c not in "-_" and not (c.isascii() and c.isalnum()) for c in value)
    if bad:
        with pytest.raises(InvalidRequest, match="cannot be used in a subject"):
            s.host_snapshot(value)
    else:
        assert s.host_snapshot(value).subject == f"sriov.v1.host.{value}.snapshot.published"


@pytest.mark.parametrize(
    "hostile", ["h1.>", "h1.*", "a b", "", "h\x00", "../etc", "x" * 129, "h1\n", "ünï"]
)
def test_hostile_ids(hostile: str) -> None:
    with pytest.raises(InvalidRequest):
        s.placement_event(hostile, "reserved")


@pytest.mark.parametrize("bad", ["0a:00.2", "0000:0a:00.8", "0000:0g:00.1", "0000-0a-00-1"])
def test_bad_pci_addresses_name_the_expected_form(bad: str) -> None:
    with pytest.raises(InvalidRequest, match=r"DDDD:BB:DD\.F"):
        s.pci_token(bad)


def test_templates_are_span_names() -> None:
    sub = s.host_link("h1", up=False)
    assert sub.subject == "sriov.v1.host.h1.link.down"
    assert sub.template == "sriov.v1.host.{host_id}.link.{state}"
    ep = s.endpoint(s.hostcmd_group("h1"), "rescan")
    assert ep.subject == "sriov.v1.hostcmd.h1.rescan"
    assert ep.template == "sriov.v1.hostcmd.{host_id}.rescan"
    assert s.template_of("sriov.v1.device.h1.0000-0a-00-2.state.updated") == s.DEVICE_STATE
