"""NATS accounts, users and permissions for a fleet, derived from the catalogue.

The architecture asks for per-host credentials: a host's daemons publish only under their own
host's subjects and receive only their own commands, and each service gets only what it needs.
Hand-written permission lists drift from the code, so here they are derived from
:mod:`sriov.common.catalog` (who publishes, consumes, serves and calls what) and built with
:mod:`sriov.common.subjects`: a channel or endpoint is allowed where the catalogue says, and
nowhere else.

Every identity also gets its own reply-inbox prefix (``_INBOX.host.<id>``) and may subscribe
only under it, so replies meant for someone else never reach it. Answers to requests it
received (micro endpoints, ``$SRV`` discovery) go through ``allow_responses``.

Passwords are bcrypt-hashed in the server configuration; the plain ones exist only in the
per-identity environment files that the daemons read (``SRIOV_NATS_*``).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from sriov.common import catalog as cat
from sriov.common import subjects as subj
from sriov.common.bus import STREAMS
from sriov.common.errors import ConfigError

ACCOUNT = "SRIOV"
SYSTEM_ACCOUNT = "SYS"
DEFAULT_BCRYPT_COST = 11
MAX_RESPONSES = 32
"""Replies allowed per request received. One would do for one responder, but a process may
run several ``nats.micro`` instances on one connection (the scheduler's request lanes): each
answers ``$SRV.PING``/``INFO``/``STATS``, and with ``allow_responses: true`` (max 1) the
server then refuses every one of those answers."""

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
"""Control-plane services: they consume streams and may provision them (``ensure_streams``)."""


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


def _consume_stream(stream: str) -> list[str]:
    """Create or bind a pull consumer on ``stream`` (durable or ephemeral), fetch and ack."""
    s = subj.token(stream, "stream")
    return [
        subj.js_api("STREAM", "INFO", s),
        subj.js_api("CONSUMER", "CREATE", s),
        subj.js_api("CONSUMER", "CREATE", s, ">"),
        subj.js_api("CONSUMER", "DURABLE", "CREATE", s, "*"),
        subj.js_api("CONSUMER", "INFO", s, "*"),
        subj.js_api("CONSUMER", "MSG", "NEXT", s, "*"),
        subj.js_api("DIRECT", "GET", s),
        subj.js_api("DIRECT", "GET", s, ">"),
        subj.js_api("STREAM", "MSG", "GET", s),
        subj.js_ack(stream),
    ]


def _js_lookup() -> list[str]:
    return [subj.js_api("INFO"), subj.js_api("STREAM", "NAMES"), subj.js_api("STREAM", "LIST")]


def _provision_streams() -> list[str]:
    """What ``Bus.ensure_streams`` sends: create, or update when it exists differently."""
    out = []
    for spec in STREAMS:
        for op in ("CREATE", "UPDATE", "INFO"):
            out.append(subj.js_api("STREAM", op, subj.token(spec.name, "stream")))
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
    """hostd and offload of one host: publish their own events, serve their own commands."""
    hid = subj.token(host_id, "host_id")
    inbox = subj.inbox_prefix("host", hid)
    publish = [subj.wildcard(c.template, host_id=hid) for c in _channels(HOST_ACTORS, "publishers")]
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
    """inventory or scheduler: consume their streams, publish their events, serve their API."""
    if actor not in SERVICES:
        raise ConfigError(f"unknown service {actor!r}: expected one of {', '.join(SERVICES)}")
    name = MICRO_NAMES[actor]
    inbox = subj.inbox_prefix("svc", actor)
    publish = [subj.wildcard(c.template) for c in _channels([actor], "publishers")]
    publish += [subj.wildcard(e.template) for e in cat.ENDPOINTS if actor in e.callers]
    for stream in sorted({c.stream for c in _channels([actor], "subscribers") if c.stream}):
        publish += _consume_stream(stream)
    publish += [subj.DEAD_LETTER_ALL, *_js_lookup(), *_provision_streams()]
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
    """sriovctl: call every endpoint the CLI may call, read every channel and stream."""
    inbox = subj.inbox_prefix("ops", "operator")
    publish = [subj.wildcard(e.template) for e in cat.ENDPOINTS if cat.CLI in e.callers]
    publish += [*subj.micro_discovery_requests(), *_js_lookup()]
    for spec in STREAMS:
        publish += _consume_stream(spec.name)
    subscribe = [*_stream_subjects(spec.name for spec in STREAMS), _own_inbox(inbox)]
    return Identity(
        user="sriov-operator",
        role=OPERATOR,
        permissions=Permissions(_uniq(publish), _uniq(subscribe)),
        inbox_prefix=inbox,
    )


def stream_admin_identity() -> Identity:
    """Provisions the JetStream streams (``ensure_streams``) and nothing else."""
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
    publish = [subj.wildcard(c.template) for c in _channels([cat.EXTERNAL], "publishers")]
    publish += [subj.wildcard(e.template) for e in cat.ENDPOINTS if cat.EXTERNAL in e.callers]
    streams = sorted({c.stream for c in _channels([cat.EXTERNAL], "subscribers") if c.stream})
    for stream in streams:
        publish += _consume_stream(stream)
    publish += _js_lookup()
    subscribe = [*_stream_subjects(streams), _own_inbox(inbox)]
    return Identity(
        user=f"client-{cid}",
        role=CLIENT,
        permissions=Permissions(_uniq(publish), _uniq(subscribe)),
        inbox_prefix=inbox,
    )


def system_identity() -> Identity:
    """The system account's user, for ``nats server report`` and friends."""
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


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------
def new_password() -> str:
    """192 random bits in ``A-Za-z0-9_-`` (safe in env files, shells and URLs)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, cost: int = DEFAULT_BCRYPT_COST) -> str:
    """bcrypt, as nats-server verifies it (``$2b$<cost>$...``)."""
    if not 4 <= cost <= 31:
        raise ConfigError(f"bcrypt cost {cost} is out of range 4..31")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


# ---------------------------------------------------------------------------------------------
# nats-server configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerTls:
    """The server's ``tls {}`` block (paths as the server sees them)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False
    """Require client certificates signed by ``ca_file`` (mutual TLS)."""


_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _conf(value: Any, indent: int = 0) -> str:
    pad = "  " * (indent + 1)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        body = "\n".join(
            f"{pad}{k if _BARE_KEY.match(k) else json.dumps(k)}: {_conf(v, indent + 1)}"
            for k, v in value.items()
        )
        return "{\n" + body + "\n" + "  " * indent + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        body = ",\n".join(f"{pad}{_conf(v, indent + 1)}" for v in value)
        return "[\n" + body + "\n" + "  " * indent + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def _user_entry(ident: Identity, password_hash: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"user": ident.user, "password": password_hash}
    p = ident.permissions
    if p is not None:
        perms: dict[str, Any] = {
            "publish": {"allow": list(p.publish)},
            "subscribe": {"allow": list(p.subscribe)},
        }
        if p.allow_responses:
            perms["allow_responses"] = {"max": MAX_RESPONSES}
        entry["permissions"] = perms
    return entry


def server_config(
    users: Sequence[tuple[Identity, str]], *, tls: ServerTls | None = None, header: str = ""
) -> str:
    """The ``accounts`` (and optional ``tls``) part of a nats-server configuration.

    ``users`` pairs each identity with its password *hash*; JetStream is enabled for the
    fleet's account. Include the result from the main configuration (``include auth.conf``).
    """
    accounts: dict[str, dict[str, Any]] = {}
    for ident, pw_hash in users:
        if not pw_hash.startswith("$2"):
            raise ConfigError(f"password of {ident.user} is not a bcrypt hash")
        acct = accounts.setdefault(ident.account, {})
        if ident.account != SYSTEM_ACCOUNT:
            acct["jetstream"] = "enabled"
        acct.setdefault("users", []).append(_user_entry(ident, pw_hash))
    parts = [header] if header else []
    parts.append(f"accounts: {_conf(accounts)}")
    if SYSTEM_ACCOUNT in accounts:
        parts.append(f"system_account: {SYSTEM_ACCOUNT}")
    if tls is not None:
        block: dict[str, Any] = {"cert_file": tls.cert_file, "key_file": tls.key_file}
        if tls.ca_file:
            block["ca_file"] = tls.ca_file
        if tls.verify:
            block["verify"] = True
        block["timeout"] = 2
        parts.append(f"tls: {_conf(block)}")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Environment files (what a daemon reads: systemd EnvironmentFile, k8s Secret, `. file`)
# ---------------------------------------------------------------------------------------------
_ENV_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")
_ENV_SAFE = re.compile(r"^[A-Za-z0-9_.,:/@%+=-]*$")


@dataclass(frozen=True)
class ClientTls:
    """TLS files as the clients see them (``SRIOV_NATS_TLS_*``)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def env_file(
    ident: Identity, password: str, *, nats_url: str | None = None, tls: ClientTls | None = None
) -> str:
    """``KEY=value`` lines for one identity; values are checked to need no quoting."""
    values: dict[str, str | None] = {
        "SRIOV_HOST_ID": ident.host_id,
        "SRIOV_NATS_URL": nats_url,
        "SRIOV_NATS_USER": ident.user,
        "SRIOV_NATS_PASSWORD": password,
        "SRIOV_NATS_INBOX_PREFIX": ident.inbox_prefix,
    }
    if tls is not None:
        values |= {
            "SRIOV_NATS_TLS_CA": tls.ca_file,
            "SRIOV_NATS_TLS_CERT": tls.cert_file,
            "SRIOV_NATS_TLS_KEY": tls.key_file,
        }
    lines = [
        f"# NATS credentials of {ident.user} ({ident.role}); generated by `sriovctl nats-config`.",
        "# Secret: keep mode 0600, never commit, never paste into a ticket.",
    ]
    for key, value in values.items():
        if value is None:
            continue
        if not _ENV_SAFE.match(value):
            raise ConfigError(f"{key} value {value!r} needs quoting: use a simpler path or URL")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def read_env(text: str) -> dict[str, str]:
    """Parse an environment file written by :func:`env_file` (comments and blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _ENV_LINE.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


# ---------------------------------------------------------------------------------------------
# A whole bundle: server file + one env file per identity, re-runnable
# ---------------------------------------------------------------------------------------------
SERVER_FILE = "server/auth.conf"


@dataclass
class Bundle:
    """Files to write, by path relative to the output directory, and which are new."""

    files: dict[str, str] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    """Users whose password was generated now (the others kept theirs)."""


def build_bundle(
    hosts: Iterable[str],
    *,
    clients: Iterable[str] = (),
    existing: Mapping[str, str] | None = None,
    rotate: Iterable[str] = (),
    nats_url: str | None = None,
    server_tls: ServerTls | None = None,
    client_tls: ClientTls | None = None,
    cost: int = DEFAULT_BCRYPT_COST,
) -> Bundle:
    """Credentials for a fleet. ``existing`` maps user -> password to keep (so adding a host
    does not change every other host's password); users in ``rotate`` get new ones."""
    keep = dict(existing or {})
    for user in rotate:
        keep.pop(user, None)
    bundle = Bundle(identities=fleet_identities(hosts, clients))
    hashed: list[tuple[Identity, str]] = []
    for ident in bundle.identities:
        password = keep.get(ident.user)
        if not password:
            password = new_password()
            bundle.created.add(ident.user)
        hashed.append((ident, hash_password(password, cost)))
        bundle.files[ident.env_name] = env_file(
            ident, password, nats_url=nats_url, tls=None if ident.role == SYSTEM else client_tls
        )
    header = "# NATS accounts and users of the SR-IOV control plane (sriovctl nats-config)."
    bundle.files[SERVER_FILE] = server_config(hashed, tls=server_tls, header=header)
    return bundle


def existing_passwords(out: Path) -> dict[str, str]:
    """user -> password from the environment files of an earlier run in ``out``."""
    found: dict[str, str] = {}
    for path in sorted(out.glob("*/*.env")):
        env = read_env(path.read_text(encoding="utf-8"))
        if env.get("SRIOV_NATS_USER") and env.get("SRIOV_NATS_PASSWORD"):
            found[env["SRIOV_NATS_USER"]] = env["SRIOV_NATS_PASSWORD"]
    return found


def write_bundle(bundle: Bundle, out: Path) -> list[Path]:
    """Write every file with mode 0600 (directories 0700); return the paths written."""
    written = []
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    for rel, text in sorted(bundle.files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
