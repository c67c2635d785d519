"""Every NATS subject of the project is built here and nowhere else.

Subjects follow ``sriov.v1.<aggregate>.<id>.<noun>.<verb-past>``. Tokens may hold only
``A-Z a-z 0-9 - _``; a PCI address ``0000:3b:00.1`` is escaped to ``0000-3b-00-1``. Ids
that cannot be escaped losslessly are refused rather than silently mangled, so two objects
can never share a subject.

Templates (with ``{placeholders}``) double as span names, per the architecture contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sriov.common.errors import InvalidRequest
from sriov.common.schemas._limits import TOKEN_MAX, TOKEN_PATTERN

PREFIX = "sriov.v1"
_TOKEN = re.compile(TOKEN_PATTERN)
_PCI = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_PCI_TOKEN = re.compile(r"^([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])$")


def token(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe subject token, else raise naming ``what``."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidRequest(
            f"{what} {value!r} cannot be used in a subject: use 1-{TOKEN_MAX} characters "
            "from A-Z a-z 0-9 - _",
            field=what,
        )
    return value


def pci_token(address: str) -> str:
    """Escape a full PCI address (``0000:3b:00.1`` -> ``0000-3b-00-1``)."""
    m = _PCI.fullmatch(address) if isinstance(address, str) else None
    if not m:
        raise InvalidRequest(
            f"PCI address {address!r} is not of the form DDDD:BB:DD.F (e.g. 0000:3b:00.1)",
            field="pci_address",
        )
    return "-".join(m.groups()).lower()


def pci_from_token(tok: str) -> str:
    """Invert :func:`pci_token`."""
    m = _PCI_TOKEN.fullmatch(tok)
    if not m:
        raise InvalidRequest(f"subject token {tok!r} is not an escaped PCI address", field="pci")
    dom, bus, dev, fn = m.groups()
    return f"{dom}:{bus}:{dev}.{fn}"


@dataclass(frozen=True, slots=True)
class Subject:
    """A concrete subject together with the template it came from (the span name)."""

    subject: str
    template: str

    def __str__(self) -> str:
        return self.subject


def _build(template: str, **values: str) -> Subject:
    return Subject(template.format(**values), template)


# --- hostd events (one host's daemons publish only under sriov.v1.host.<host_id>.>) ---------
HOST_EVENTS_ALL = f"{PREFIX}.host.>"
HOST_SNAPSHOT = PREFIX + ".host.{host_id}.snapshot.published"
HOST_VF_DISCOVERED = PREFIX + ".host.{host_id}.vf.discovered"
HOST_VF_CHANGED = PREFIX + ".host.{host_id}.vf.changed"
HOST_VF_REMOVED = PREFIX + ".host.{host_id}.vf.removed"
HOST_PF_CHANGED = PREFIX + ".host.{host_id}.pf.changed"
HOST_LINK = PREFIX + ".host.{host_id}.link.{state}"  # state: up | down
HOST_HEARTBEAT = PREFIX + ".host.{host_id}.heartbeat.sent"
HOST_DIAGNOSTICS = PREFIX + ".host.{host_id}.diagnostics.reported"
HOST_VF_APPLIED = PREFIX + ".host.{host_id}.vf.applied"
HOST_VF_APPLIED_ALL = PREFIX + ".host.*.vf.applied"


def host_snapshot(host_id: str) -> Subject:
    return _build(HOST_SNAPSHOT, host_id=token(host_id, "host_id"))


def host_vf(host_id: str, verb: str) -> Subject:
    template = {
        "discovered": HOST_VF_DISCOVERED,
        "changed": HOST_VF_CHANGED,
        "removed": HOST_VF_REMOVED,
        "applied": HOST_VF_APPLIED,
    }[verb]
    return _build(template, host_id=token(host_id, "host_id"))


def host_pf_changed(host_id: str) -> Subject:
    return _build(HOST_PF_CHANGED, host_id=token(host_id, "host_id"))


def host_link(host_id: str, up: bool) -> Subject:
    return _build(HOST_LINK, host_id=token(host_id, "host_id"), state="up" if up else "down")


def host_heartbeat(host_id: str) -> Subject:
    return _build(HOST_HEARTBEAT, host_id=token(host_id, "host_id"))


def host_diagnostics(host_id: str) -> Subject:
    return _build(HOST_DIAGNOSTICS, host_id=token(host_id, "host_id"))


def host_events_of(host_id: str) -> str:
    """Wildcard for everything one host publishes (used in its NATS permissions)."""
    return f"{PREFIX}.host.{token(host_id, 'host_id')}.>"


# --- inventory state: last value per subject --------------------------------------------------
DEVICE_STATE = PREFIX + ".device.{host_id}.{pci}.state.updated"
DEVICE_STATE_ALL = f"{PREFIX}.device.>"
HOST_STATE = PREFIX + ".fleet.{host_id}.status.updated"
HOST_STATE_ALL = f"{PREFIX}.fleet.>"


def device_state(host_id: str, pci_address: str) -> Subject:
    return _build(DEVICE_STATE, host_id=token(host_id, "host_id"), pci=pci_token(pci_address))


def device_state_of_host(host_id: str) -> str:
    return f"{PREFIX}.device.{token(host_id, 'host_id')}.>"


def host_state(host_id: str) -> Subject:
    return _build(HOST_STATE, host_id=token(host_id, "host_id"))


# --- placement ------------------------------------------------------------------------------
PLACEMENT_EVENT = PREFIX + ".placement.{guest_id}.{verb}"
PLACEMENT_EVENTS_ALL = f"{PREFIX}.placement.*.*"
PLACEMENT_VERBS = ("reserved", "confirmed", "released", "expired", "failed", "lost", "ready")
PLACEMENT_REQUEST = PREFIX + ".placement.{guest_id}.{op}.requested"
PLACEMENT_REQUESTS_ALL = f"{PREFIX}.placement.*.*.requested"
PLACEMENT_OPS = ("place", "attach", "release")


def placement_event(guest_id: str, verb: str) -> Subject:
    if verb not in PLACEMENT_VERBS:
        raise InvalidRequest(f"placement event verb {verb!r} is not one of {PLACEMENT_VERBS}")
    return _build(PLACEMENT_EVENT, guest_id=token(guest_id, "guest_id"), verb=verb)


def placement_request(guest_id: str, op: str) -> Subject:
    if op not in PLACEMENT_OPS:
        raise InvalidRequest(f"placement operation {op!r} is not one of {PLACEMENT_OPS}")
    return _build(PLACEMENT_REQUEST, guest_id=token(guest_id, "guest_id"), op=op)


# --- offload events ---------------------------------------------------------------------------
OFFLOAD_EVENT = PREFIX + ".offload.{host_id}.{noun}.{verb}"
OFFLOAD_EVENTS_ALL = f"{PREFIX}.offload.>"
OFFLOAD_AUDIT = PREFIX + ".offload.{host_id}.audit.completed"
OFFLOAD_CONFIG = PREFIX + ".offload.{host_id}.config.changed"
OFFLOAD_CHECKS = PREFIX + ".offload.{host_id}.checks.reported"


def offload_audit(host_id: str) -> Subject:
    return _build(OFFLOAD_AUDIT, host_id=token(host_id, "host_id"))


def offload_config(host_id: str) -> Subject:
    return _build(OFFLOAD_CONFIG, host_id=token(host_id, "host_id"))


def offload_checks(host_id: str) -> Subject:
    return _build(OFFLOAD_CHECKS, host_id=token(host_id, "host_id"))


def offload_events_of(host_id: str) -> str:
    return f"{PREFIX}.offload.{token(host_id, 'host_id')}.>"


# --- request/reply services (nats.micro) ------------------------------------------------------
# Each service registers endpoints under a group prefix; the full subject is
# "<group>.<endpoint>". Per-host agents use a host-scoped group so a host receives only
# its own commands.
INVENTORY_GROUP = f"{PREFIX}.inventory"
INVENTORY_DEVICES_GROUP = f"{INVENTORY_GROUP}.devices"
INVENTORY_HOSTS_GROUP = f"{INVENTORY_GROUP}.hosts"
SCHEDULER_GROUP = f"{PREFIX}.scheduler"
HOSTCMD_GROUP = PREFIX + ".hostcmd.{host_id}"
OFFLOADCMD_GROUP = PREFIX + ".offloadcmd.{host_id}"


def hostcmd_group(host_id: str) -> str:
    return HOSTCMD_GROUP.format(host_id=token(host_id, "host_id"))


def offloadcmd_group(host_id: str) -> str:
    return OFFLOADCMD_GROUP.format(host_id=token(host_id, "host_id"))


def endpoint_name(template: str) -> str:
    """The ``nats.micro`` name of an endpoint: its subject template after the service's own
    token, placeholders left out (``devices_list``, ``hosts_get``, ``place``, ``set_numvfs``),
    so no two endpoints of one service share a name in ``nats micro info``."""
    tail = template.split(".")[3:]
    return "_".join(t for t in tail if not t.startswith("{")).replace("-", "_")


def endpoint(group: str, name: str) -> Subject:
    """The subject of endpoint ``name`` in a service group; the template keeps placeholders."""
    template = group
    for prefix in (HOSTCMD_GROUP, OFFLOADCMD_GROUP):
        head = prefix.split("{", 1)[0]
        if group.startswith(head) and group != prefix:
            template = prefix
    return Subject(f"{group}.{token(name, 'endpoint')}", f"{template}.{name}")


# --- desired VF state (the scheduler -> one host's hostd; last value per VF) ----------------
DESIRED_VF = PREFIX + ".desired.{host_id}.{pci}.vf.updated"
DESIRED_ALL = f"{PREFIX}.desired.>"


def desired_vf(host_id: str, pci_address: str) -> Subject:
    return _build(DESIRED_VF, host_id=token(host_id, "host_id"), pci=pci_token(pci_address))


def desired_of_host(host_id: str) -> str:
    """Wildcard for one host's desired state (its hostd's consumer filter and permission)."""
    return f"{PREFIX}.desired.{token(host_id, 'host_id')}.>"


# --- streams ----------------------------------------------------------------------------------
STREAM_HOST_EVENTS = "SRIOV_HOST_EVENTS"
STREAM_STATE = "SRIOV_STATE"
STREAM_PLACEMENT = "SRIOV_PLACEMENT"
STREAM_PLACEMENT_REQUESTS = "SRIOV_PLACEMENT_REQUESTS"
STREAM_OFFLOAD = "SRIOV_OFFLOAD"
STREAM_DESIRED = "SRIOV_DESIRED"
DEAD_LETTER = PREFIX + ".deadletter.{consumer}"
DEAD_LETTER_ALL = f"{PREFIX}.deadletter.>"
STREAM_DEAD_LETTER = "SRIOV_DEAD_LETTER"


def dead_letter(consumer: str) -> Subject:
    return _build(DEAD_LETTER, consumer=token(consumer, "consumer"))


def template_of(subject: str) -> str:
    """Best-effort template of a concrete subject, for span names on the consuming side."""
    parts = subject.split(".")
    if len(parts) < 4 or ".".join(parts[:2]) != PREFIX:
        return subject
    agg = parts[2]
    if agg in ("host", "offload", "fleet", "hostcmd", "offloadcmd"):
        parts[3] = "{host_id}"
    elif agg == "placement":
        parts[3] = "{guest_id}"
    elif agg in ("device", "desired") and len(parts) >= 5:
        parts[3], parts[4] = "{host_id}", "{pci}"
    elif agg == "deadletter":
        parts[3] = "{consumer}"
    return ".".join(parts)


# --- NATS system subjects, for per-identity permissions (see sriov.cli.nats_auth) --------
SRV_PREFIX = "$SRV"
SRV_VERBS = ("PING", "INFO", "STATS")
JS_API_PREFIX = "$JS.API"
JS_ACK_PREFIX = "$JS.ACK"
INBOX_ROOT = "_INBOX"


def inbox_prefix(kind: str, ident: str) -> str:
    """Reply-inbox prefix of one identity (``_INBOX.host.<id>``), passed to ``nats.connect``
    so its credentials may subscribe only under it and no one else's replies reach it."""
    return f"{INBOX_ROOT}.{token(kind, 'inbox kind')}.{token(ident, 'inbox id')}"


def micro_discovery(service: str) -> list[str]:
    """What a ``nats.micro`` service named ``service`` subscribes to (PING/INFO/STATS)."""
    name = token(service, "service name")
    return [
        f"{SRV_PREFIX}.{verb}{suffix}"
        for verb in SRV_VERBS
        for suffix in ("", f".{name}", f".{name}.*")
    ]


def micro_discovery_requests() -> list[str]:
    """What a client publishes to discover services (``nats micro ls``, ``sriovctl services``)."""
    return [f"{SRV_PREFIX}.{verb}{suffix}" for verb in SRV_VERBS for suffix in ("", ".>")]


def js_api(*tokens: str) -> str:
    """A JetStream API subject, e.g. ``js_api("CONSUMER", "INFO", stream, "*")``."""
    return ".".join((JS_API_PREFIX, *tokens))


def js_ack(stream: str) -> str:
    """Every ack subject of every consumer on ``stream`` (``$JS.ACK.<stream>.>``)."""
    return f"{JS_ACK_PREFIX}.{token(stream, 'stream')}.>"


def wildcard(template: str, **fixed: str) -> str:
    """A template as a permission subject: placeholders named in ``fixed`` take that (checked)
    value, every other placeholder becomes ``*`` (``host.{host_id}.link.{state}``, host_id=a
    -> ``host.a.link.*``)."""
    return re.sub(
        r"\{(\w+)\}",
        lambda m: token(fixed[m.group(1)], m.group(1)) if m.group(1) in fixed else "*",
        template,
    )
