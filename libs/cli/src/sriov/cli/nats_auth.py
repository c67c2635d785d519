"""NATS identities and least-privilege permissions for a fleet, derived from the catalogue.

The architecture asks for per-host credentials: a host's daemons publish only under their own
host's subjects and receive only their own commands, and each service gets only what it needs.
Hand-written permission lists drift from the code, so here they are derived from
:mod:`sriov.common.catalog` (who publishes, consumes, serves and calls what) and built with
:mod:`sriov.common.subjects`: a channel or endpoint is allowed where the catalogue says, with
its verbs spelled out (``link.up``, ``link.down``, never ``link.*``), and nowhere else.

JetStream follows the same rule (issue 17). Only the stream admin creates or updates streams;
a running identity may read ``STREAM.INFO`` of the streams it uses (to detect tampering) and
create, read, pull from and ack only the durables listed in :data:`DURABLES` as its own. The
operator and clients read through server-named ordered consumers (``CONSUMER.CREATE.<stream>``
with no name: never someone's durable) pushed to their own inbox, so they need neither
``MSG.NEXT`` nor ``ACK``. NATS permissions match whole tokens, so "a name prefix of their own"
is expressed as exact durable names (or, for the scheduler's per-epoch ``scheduler-state-*``,
every named consumer of ``SRIOV_STATE``, which no other identity may create).

Every identity also gets its own reply-inbox prefix (``_INBOX.host.<id>``) and may subscribe
only under it, so replies meant for someone else never reach it. Answers to requests it
received (micro endpoints, ``$SRV`` discovery) go through ``allow_responses``.
Keys, server configuration and environment files: :mod:`sriov.cli.nats_bundle`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sriov.common import catalog as cat
from sriov.common import subjects as subj
from sriov.common.bus import STREAMS
from sriov.common.errors import ConfigError

ACCOUNT = "SRIOV"
SYSTEM_ACCOUNT = "SYS"
MAX_RESPONSES = 32
"""Replies allowed per request received. A replica is one ``nats.micro`` instance (its
endpoints serve requests concurrently), so one would do for it; but a process may host several
instances on one connection (tests, tools): each answers ``$SRV.PING``/``INFO``/``STATS``, and
with ``allow_responses: true`` (max 1) the server then refuses every one of those answers."""

# Roles (the catalogue's actors) and the nats.micro service name each one registers.
HOST = "host"
OPERATOR = "operator"
STREAM_ADMIN = "stream-admin"
CLIENT = "client"
SYSTEM = "system"
MICRO_NAMES = {
    cat.HOSTD: "sriov-hostd",
    cat.OFFLOAD: "sriov-offload",
    cat.INVENTORY: "sriov-inventory",
    cat.SCHEDULER: "sriov-scheduler",
}
HOST_ACTORS = (cat.HOSTD, cat.OFFLOAD)
SERVICES = (cat.INVENTORY, cat.SCHEDULER)
"""Control-plane services: they consume streams through durables of their own."""

VALUES = {
    "state": ("up", "down"),
    "verb": subj.PLACEMENT_VERBS,
    "op": subj.PLACEMENT_OPS,
}
"""The closed set of each enumerated subject placeholder: permissions list every value."""


@dataclass(frozen=True)
class Durable:
    """A durable consumer a role owns: only that role may create, read, pull and ack it."""

    actor: str
    stream: str
    name: str
    """``*``: every named consumer of the stream (which no other role may create);
    ``{host_id}``: one per host, its filter pinned to that host's subjects."""


DURABLES: tuple[Durable, ...] = (
    Durable(cat.INVENTORY, subj.STREAM_HOST_EVENTS, "inventory-host-events"),
    Durable(cat.INVENTORY, subj.STREAM_PLACEMENT, "inventory-placement"),
    Durable(cat.SCHEDULER, subj.STREAM_PLACEMENT_REQUESTS, "scheduler-requests"),
    Durable(cat.SCHEDULER, subj.STREAM_STATE, "*"),  # scheduler-state-<database epoch>
    Durable(cat.SCHEDULER, subj.STREAM_HOST_EVENTS, "scheduler-vf-applied"),
    Durable(cat.HOSTD, subj.STREAM_DESIRED, "hostd-desired-{host_id}"),
)


def hostd_desired_durable(host_id: str) -> str:
    return f"hostd-desired-{subj.token(host_id, 'host_id')}"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = True


@dataclass(frozen=True)
class Identity:
    """One NATS user: what it may do and how its daemons must connect."""

    user: str
    role: str
    permissions: Permissions | None
    """None: unrestricted (the system account's user)."""
    inbox_prefix: str | None
    account: str = ACCOUNT
    host_id: str | None = None

    @property
    def env_name(self) -> str:
        """Where its environment file goes in a bundle, relative to the output directory."""
        folder = {HOST: "hosts", CLIENT: "clients"}.get(self.role, "services")
        if self.role in (OPERATOR, STREAM_ADMIN, SYSTEM):
            folder = "admin"
        stem = self.host_id or (self.user.removeprefix("client-") if self.role == CLIENT else "")
        return f"{folder}/{stem or self.user}.env"


# ---------------------------------------------------------------------------------------------
# Permission building blocks
# ---------------------------------------------------------------------------------------------
def _uniq(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _channels(actors: Sequence[str], side: str) -> list[cat.Channel]:
    return [c for c in cat.CHANNELS if set(actors) & set(getattr(c, side))]


def _exact(template: str, **fixed: str) -> list[str]:
    """Permission subjects of a template: enumerated placeholders expanded to each value."""
    out = [template]
    for name, values in VALUES.items():
        if "{" + name + "}" in template and name not in fixed:
            out = [x.replace("{" + name + "}", v) for x in out for v in values]
    return [subj.wildcard(x, **fixed) for x in out]


def _stream_info(streams: Iterable[str]) -> list[str]:
    return [subj.js_api("STREAM", "INFO", subj.token(s, "stream")) for s in sorted(set(streams))]


def _own_durable(d: Durable, host_id: str | None = None) -> list[str]:
    """Create (only with its fixed filter, when it has one), read, pull and ack one durable."""
    s = subj.token(d.stream, "stream")
    if host_id:  # the filter token pins it to its own host: the server checks it
        name = hostd_desired_durable(host_id)
        create = [
            subj.js_api("CONSUMER", "CREATE", s, name, subj.desired_of_host(host_id)),
            # hostd replays current desired state at each start: it deletes its own durable
            subj.js_api("CONSUMER", "DELETE", s, name),
        ]
    else:
        name = d.name
        create = [
            subj.js_api("CONSUMER", "CREATE", s, name),
            subj.js_api("CONSUMER", "CREATE", s, name, ">"),
        ]
    return [
        *create,
        subj.js_api("CONSUMER", "INFO", s, name),
        subj.js_api("CONSUMER", "MSG", "NEXT", s, name),
        f"{subj.JS_ACK_PREFIX}.{s}.{name}.>",
    ]


def _read_stream(stream: str) -> list[str]:
    """Read-only: stream and consumer info, stored messages, server-named ordered consumers."""
    s = subj.token(stream, "stream")
    return [
        subj.js_api("STREAM", "INFO", s),
        subj.js_api("CONSUMER", "CREATE", s),  # no name token: ephemeral, server-named
        subj.js_api("CONSUMER", "INFO", s, "*"),
        subj.js_api("CONSUMER", "LIST", s),
        subj.js_api("CONSUMER", "NAMES", s),
        subj.js_api("DIRECT", "GET", s),
        subj.js_api("DIRECT", "GET", s, ">"),
        subj.js_api("STREAM", "MSG", "GET", s),
        f"$JS.FC.{s}.>",  # flow-control replies of an ordered push consumer
    ]


def _js_lookup() -> list[str]:
    return [subj.js_api("INFO"), subj.js_api("STREAM", "NAMES"), subj.js_api("STREAM", "LIST")]


def _provision_streams() -> list[str]:
    """What ``Bus.ensure_streams`` sends, and removing a tampered durable so its owner can
    create it again (``CONSUMER.DELETE``)."""
    out = []
    for spec in STREAMS:
        s = subj.token(spec.name, "stream")
        for op in ("CREATE", "UPDATE", "INFO"):
            out.append(subj.js_api("STREAM", op, s))
        out += [subj.js_api("CONSUMER", "DELETE", s, "*"), subj.js_api("CONSUMER", "INFO", s, "*")]
    return out


def _stream_subjects(streams: Iterable[str]) -> list[str]:
    """Live (core) subscriptions to everything the given streams capture: a reader may tail
    ``sriov.v1.host.>`` or one host's ``sriov.v1.host.<id>.>``, never commands or replies."""
    wanted = set(streams)
    return [x for spec in STREAMS if spec.name in wanted for x in spec.subjects]


def _own_inbox(prefix: str) -> str:
    return f"{prefix}.>"


# ---------------------------------------------------------------------------------------------
# Identities per role
# ---------------------------------------------------------------------------------------------
def host_identity(host_id: str) -> Identity:
    """hostd and offload of one host: publish their own events, serve their own commands,
    read their own desired state through their own durable."""
    hid = subj.token(host_id, "host_id")
    inbox = subj.inbox_prefix("host", hid)
    publish = [
        x for c in _channels(HOST_ACTORS, "publishers") for x in _exact(c.template, host_id=hid)
    ]
    for d in DURABLES:
        if d.actor in HOST_ACTORS:
            publish += _own_durable(d, host_id=hid)
            publish.append(subj.dead_letter(hostd_desired_durable(hid)).subject)
    read = [*cat.streams_of(*HOST_ACTORS), subj.STREAM_DEAD_LETTER]
    publish += [subj.js_api("INFO"), *_stream_info(read)]
    subscribe = [
        subj.wildcard(e.template, host_id=hid) for e in cat.ENDPOINTS if e.service in HOST_ACTORS
    ]
    for actor in HOST_ACTORS:
        subscribe += subj.micro_discovery(MICRO_NAMES[actor])
    subscribe.append(_own_inbox(inbox))
    return Identity(
        user=f"host-{hid}",
        role=HOST,
        permissions=Permissions(_uniq(publish), _uniq(subscribe)),
        inbox_prefix=inbox,
        host_id=hid,
    )


def service_identity(actor: str) -> Identity:
    """inventory or scheduler: consume their streams through their own durables, publish
    their events, serve their API. They never create or change a stream."""
    if actor not in SERVICES:
        raise ConfigError(f"unknown service {actor!r}: expected one of {', '.join(SERVICES)}")
    name = MICRO_NAMES[actor]
    inbox = subj.inbox_prefix("svc", actor)
    publish = [x for c in _channels([actor], "publishers") for x in _exact(c.template)]
    publish += [subj.wildcard(e.template) for e in cat.ENDPOINTS if actor in e.callers]
    own = [d for d in DURABLES if d.actor == actor]
    for d in own:
        publish += _own_durable(d)
        publish.append(subj.dead_letter(d.name).subject if d.name != "*" else
                       subj.DEAD_LETTER_ALL.replace(">", "*"))  # fmt: skip
    for stream in sorted({d.stream for d in own}):
        s = subj.token(stream, "stream")
        publish += [subj.js_api("DIRECT", "GET", s), subj.js_api("DIRECT", "GET", s, ">")]
    publish += [
        subj.js_api("INFO"),
        *_stream_info([*cat.streams_of(actor), subj.STREAM_DEAD_LETTER]),
    ]
    publish += subj.micro_discovery_requests()  # readiness probe: `sriovctl services`
    subscribe = [subj.wildcard(e.template) for e in cat.ENDPOINTS if e.service == actor]
    subscribe += [*subj.micro_discovery(name), _own_inbox(inbox)]
    return Identity(
        user=name,
        role=actor,
        permissions=Permissions(_uniq(publish), _uniq(subscribe)),
        inbox_prefix=inbox,
    )


def operator_identity() -> Identity:
    """sriovctl: call every endpoint the CLI may call, read every channel and stream; it
    changes no stream and no one's durable."""
    inbox = subj.inbox_prefix("ops", "operator")
    publish = [subj.wildcard(e.template) for e in cat.ENDPOINTS if cat.CLI in e.callers]
    publish += [*subj.micro_discovery_requests(), *_js_lookup()]
    for spec in STREAMS:
        publish += _read_stream(spec.name)
    subscribe = [*_stream_subjects(spec.name for spec in STREAMS), _own_inbox(inbox)]
    return Identity(
        user="sriov-operator",
        role=OPERATOR,
        permissions=Permissions(_uniq(publish), _uniq(subscribe)),
        inbox_prefix=inbox,
    )


def stream_admin_identity() -> Identity:
    """Provisions the JetStream streams (``ensure_streams``) at deploy and upgrade time, and
    removes a tampered durable; it reads and publishes no message."""
    inbox = subj.inbox_prefix("ops", "stream-admin")
    return Identity(
        user="sriov-stream-admin",
        role=STREAM_ADMIN,
        permissions=Permissions(
            _uniq([*_provision_streams(), *_js_lookup()]), (_own_inbox(inbox),), False
        ),
        inbox_prefix=inbox,
    )


def client_identity(name: str) -> Identity:
    """Another system (a cloud controller): place/attach/release, read state and events."""
    cid = subj.token(name, "client name")
    inbox = subj.inbox_prefix("client", cid)
    publish = [x for c in _channels([cat.EXTERNAL], "publishers") for x in _exact(c.template)]
    publish += [subj.wildcard(e.template) for e in cat.ENDPOINTS if cat.EXTERNAL in e.callers]
    streams = sorted({c.stream for c in _channels([cat.EXTERNAL], "subscribers") if c.stream})
    for stream in streams:
        publish += _read_stream(stream)
    publish += [*_js_lookup(), *_stream_info(cat.streams_of(cat.EXTERNAL))]
    subscribe = [*_stream_subjects(streams), _own_inbox(inbox)]
    return Identity(
        user=f"client-{cid}",
        role=CLIENT,
        permissions=Permissions(_uniq(publish), _uniq(subscribe)),
        inbox_prefix=inbox,
    )


def system_identity() -> Identity:
    """The system account's user: a root credential (it can purge every stream of the
    fleet's account through the system API). Kept offline, never on a pod or host."""
    return Identity(user="sys", role=SYSTEM, permissions=None, inbox_prefix=None,
                    account=SYSTEM_ACCOUNT)  # fmt: skip


def fleet_identities(hosts: Iterable[str], clients: Iterable[str] = ()) -> list[Identity]:
    """Every identity of a fleet; duplicate host or client names are an error."""
    ids = [
        *(service_identity(a) for a in SERVICES),
        operator_identity(),
        stream_admin_identity(),
        system_identity(),
        *(host_identity(h) for h in hosts),
        *(client_identity(c) for c in clients),
    ]
    seen: set[str] = set()
    for ident in ids:
        if ident.user in seen:
            raise ConfigError(f"{ident.user} is listed twice: each host or client once")
        seen.add(ident.user)
    return ids
