"""Parse ``ovs-appctl dpctl/dump-flows [-m]`` output into flows, fast and without judgement.

One parser covers every datapath OVS prints (``lib/dpctl.c: format_dpif_flow``)::

    [ufid:U, ]MATCH, packets:N, bytes:N, used:(never|Ts)[, flags:F]
        [, offloaded:(yes|partial)][, dp:(ovs|tc|dpdk)], actions:A[, dp-extra-info:X]

kernel (``system@``) dumps with and without ``-m``, tc flows (``dp:tc``), and the
userspace datapath, whose dumps are split by ``flow-dump from the main thread:`` /
``flow-dump from pmd on cpu core: N`` headers. Counters are Python ints (64-bit counters
survive). A line that is none of these is kept as a :class:`ParseError` naming its number,
so one odd line never hides the rest of the dump.

OVS prints ``offloaded:`` and ``dp:`` only with ``-m``: a line without ``dp:`` says nothing
about where the flow runs, so its status is ``unknown`` -- unless the caller knows the dump was
taken with ``type=offloaded`` (``offloaded_only``), which lists offloaded flows only.

Speed matters (a busy host holds 100k+ flows): each line costs one ``str.find`` for the
stats and one anchored regex match of the short tail, never a scan with backtracking.
"""

from __future__ import annotations

import re

import msgspec

OFFLOADED, PARTIAL, NOT_OFFLOADED, UNKNOWN = "yes", "partial", "no", "unknown"

_STATS = ", packets:"
_TAIL = re.compile(
    r", packets:(\d+), bytes:(\d+), used:(?:never|(\d+(?:\.\d+)?)s)"
    r"(?:, flags:([^,]*))?"
    r"(?:, offloaded:(yes|partial))?"
    r"(?:, dp:([\w-]+))?"
    r", actions:"
)
_EXTRA = ", dp-extra-info:"
_HEADER = "flow-dump from "
_PMD = re.compile(r"flow-dump from pmd on cpu core: (\d+)")
_UFID = re.compile(r"ufid:([0-9a-fA-F-]+), ")


class Flow(msgspec.Struct, kw_only=True, gc=False):
    """One datapath flow as dump-flows printed it."""

    match: str
    """The flow key/mask text (without the ufid)."""
    actions: str
    packets: int
    bytes: int
    used: float | None
    """Seconds since the flow last matched a packet; None when it never did."""
    ufid: str | None = None
    in_port: str | None = None
    """Port name (with ``-m``/``--names``) or datapath port number."""
    flags: str | None = None
    """TCP flags seen (``S.``, ``SFP.``) when any."""
    dp: str | None = None
    """Layer holding the flow (``ovs``, ``tc``, ``dpdk``); only printed with ``-m``."""
    offloaded: str = NOT_OFFLOADED
    """``yes`` (in hardware), ``partial`` (userspace with HW classification), ``no``, or
    ``unknown`` (a dump without ``-m`` does not say)."""
    pmd: int | None = None
    """Userspace datapath thread: a PMD core id, -1 for the main thread, None if unsaid."""
    extra: str | None = None
    """``dp-extra-info`` (userspace datapath, ``-m``)."""
    datapath: str | None = None
    """The dump's datapath (``netdev@ovs-netdev``), as the caller named it."""
    line: int = 0
    """1-based line number in the dump text."""


class ParseError(msgspec.Struct, kw_only=True, frozen=True):
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text[:200]!r}"


class Dump(msgspec.Struct, kw_only=True):
    flows: list[Flow]
    errors: list[ParseError]


def parse_dump(text: str, *, datapath: str | None = None, offloaded_only: bool = False) -> Dump:
    """Every flow of one dump-flows output; lines it cannot read become errors.

    ``offloaded_only``: the dump was taken with ``type=offloaded``, so every flow it lists is
    offloaded whatever its line says."""
    flows: list[Flow] = []
    errors: list[ParseError] = []
    pmd: int | None = None
    tail_match = _TAIL.match
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line or line.isspace():
            continue
        if line.startswith(_HEADER):
            m = _PMD.fullmatch(line.rstrip(":").rstrip())
            pmd = int(m.group(1)) if m else -1
            continue
        at = line.find(_STATS)
        m = tail_match(line, at) if at > 0 else None
        if m is None:
            errors.append(ParseError(line=lineno, text=line, reason=_why(line)))
            continue
        head = line[:at]
        ufid = None
        if head.startswith("ufid:"):
            u = _UFID.match(head)
            if u is None:
                errors.append(ParseError(line=lineno, text=line, reason="malformed ufid"))
                continue
            ufid = u.group(1)
            head = head[u.end() :]
        actions = line[m.end() :]
        extra = None
        cut = actions.find(_EXTRA)
        if cut >= 0:
            actions, extra = actions[:cut], actions[cut + len(_EXTRA) :]
        packets, nbytes, used, flags, offloaded, dp = m.groups()
        port = None
        start = head.find("in_port(")
        if start >= 0:
            end = head.find(")", start)
            port = head[start + 8 : end] if end > start + 8 else None
        flows.append(
            Flow(
                match=head,
                actions=actions,
                packets=int(packets),
                bytes=int(nbytes),
                used=float(used) if used is not None else None,
                ufid=ufid,
                in_port=port,
                flags=flags,
                dp=dp,
                offloaded=OFFLOADED if offloaded_only else _status(offloaded, dp),
                pmd=pmd,
                extra=extra,
                datapath=datapath,
                line=lineno,
            )
        )
    return Dump(flows=flows, errors=errors)


def _status(offloaded: str | None, dp: str | None) -> str:
    if offloaded:
        return offloaded
    return NOT_OFFLOADED if dp else UNKNOWN  # no dp: the dump was taken without -m


def _why(line: str) -> str:
    if _STATS not in line:
        return "no 'packets:' statistics (not a dump-flows line)"
    if ", actions:" not in line:
        return "no 'actions:' field"
    return "statistics are not 'packets:N, bytes:N, used:T'"
