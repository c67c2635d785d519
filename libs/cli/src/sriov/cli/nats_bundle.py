"""Credentials of a fleet: user nkeys, the server's accounts file and one env file per identity.

Every identity authenticates with an nkey (issue 17): the server keeps only public keys and
checks an Ed25519 signature of a nonce, which costs microseconds, so failed logins cannot
burn its CPU as bcrypt password checks did. Seeds exist only in the per-identity environment
files (``SRIOV_NATS_NKEY_SEED``, mode 0600). Re-running keeps every seed; ``rotate`` replaces
one; an identity no longer configured has its file deleted and its public key recorded in
``server/revoked.txt``, so adding it again gives it a new key, never the old one.

Limits the server enforces in configuration mode (no operator/JWT needed): per account, the
JetStream storage, streams and consumers and the connections, subscriptions and payload of
all its users. Per-user connection limits exist only in JWT mode; the account's connection
cap is sized from the fleet instead (see :func:`account_limits`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sriov.common.bus.streams import GiB, MiB
from sriov.common.errors import ConfigError

from .nats_auth import (
    ACCOUNT,
    MAX_RESPONSES,
    STREAM_ADMIN,
    SYSTEM,
    SYSTEM_ACCOUNT,
    Identity,
    fleet_identities,
)  # fmt: skip

SERVER_FILE = "server/auth.conf"
REVOKED_FILE = "server/revoked.txt"
SERVICE_CONNECTIONS = 256
"""Connections of services, operators and clients beside the hosts' (replicas, shells)."""


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------
def new_seed() -> str:
    """A user nkey seed (``SU...``): 256 random bits."""
    # nkeys (and PyNaCl) load only for the commands that make keys, not for every sriovctl run
    import nkeys  # type: ignore[import-untyped]

    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The user's public key (``U...``), what the server configuration names."""
    import nkeys

    try:
        key: bytes = nkeys.from_seed(bytearray(seed.encode())).public_key
    except nkeys.NkeysError as exc:
        raise ConfigError(f"not a user nkey seed: {exc}") from exc
    return key.decode()


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


def _user_entry(ident: Identity, key: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"nkey": key}
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


def account_limits(hosts: int) -> dict[str, Any]:
    """The fleet account's limits: two connections per host (hostd, offload) plus
    :data:`SERVICE_CONNECTIONS`; one durable per host (its desired state) plus the services'
    and the readers' ephemeral ones; JetStream storage for the catalogue's streams (37 GiB
    of ``max_bytes``) and no more; payloads no larger than the largest stream message."""
    return {
        "jetstream": {
            "max_file": 40 * GiB,
            "max_mem": 256 * MiB,
            "max_streams": 16,
            "max_consumers": hosts + 1024,
        },
        "limits": {
            "max_connections": 2 * hosts + SERVICE_CONNECTIONS,
            "max_subscriptions": 1000 * (2 * hosts + SERVICE_CONNECTIONS),
            "max_payload": MiB,
        },
    }


def server_config(
    users: Sequence[tuple[Identity, str]],
    *,
    hosts: int,
    tls: ServerTls | None = None,
    header: str = "",
) -> str:
    """The ``accounts`` (and optional ``tls``) part of a nats-server configuration.

    ``users`` pairs each identity with its public nkey. Include the result from the main
    configuration (``include auth.conf``).
    """
    accounts: dict[str, dict[str, Any]] = {}
    for ident, key in users:
        if not key.startswith("U"):
            raise ConfigError(f"key of {ident.user} is not a user public nkey")
        acct = accounts.setdefault(ident.account, {})
        if ident.account == ACCOUNT and not acct:
            acct.update(account_limits(hosts))
        acct.setdefault("users", []).append(_user_entry(ident, key))
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
    ident: Identity, seed: str, *, nats_url: str | None = None, tls: ClientTls | None = None
) -> str:
    """``KEY=value`` lines for one identity; values are checked to need no quoting. Only the
    stream admin (and the system user) provision streams; every other identity verifies."""
    values: dict[str, str | None] = {
        "SRIOV_HOST_ID": ident.host_id,
        "SRIOV_NATS_URL": nats_url,
        "SRIOV_NATS_USER": ident.user,
        "SRIOV_NATS_NKEY_SEED": seed,
        "SRIOV_NATS_INBOX_PREFIX": ident.inbox_prefix,
        "SRIOV_PROVISION_STREAMS": None if ident.role in (STREAM_ADMIN, SYSTEM) else "false",
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
@dataclass
class Bundle:
    """Files to write (by path relative to the output directory), files to delete, and which
    identities got a new key."""

    files: dict[str, str] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    """Users whose key was generated now (the others kept theirs)."""
    removed: dict[str, str] = field(default_factory=dict)
    """Users no longer configured -> their env file, deleted by :func:`write_bundle`."""


@dataclass(frozen=True)
class Existing:
    """What an earlier run left in the output directory."""

    seeds: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    """user -> env file (relative)."""
    revoked: frozenset[str] = frozenset()


def build_bundle(
    hosts: Iterable[str],
    *,
    clients: Iterable[str] = (),
    existing: Existing | None = None,
    rotate: Iterable[str] = (),
    nats_url: str | None = None,
    server_tls: ServerTls | None = None,
    client_tls: ClientTls | None = None,
) -> Bundle:
    """Credentials for a fleet. Earlier seeds are kept (adding a host changes no one else's),
    except for users in ``rotate`` and keys already revoked; users dropped are revoked."""
    old = existing or Existing()
    host_ids = list(hosts)
    bundle = Bundle(identities=fleet_identities(host_ids, clients))
    revoked = set(old.revoked)
    keys: list[tuple[Identity, str]] = []
    for user in rotate:
        if user in old.seeds:
            revoked.add(public_key(old.seeds[user]))
    for ident in bundle.identities:
        seed = old.seeds.get(ident.user)
        if not seed or public_key(seed) in revoked:
            seed = new_seed()
            bundle.created.add(ident.user)
        keys.append((ident, public_key(seed)))
        tls = None if ident.role == SYSTEM else client_tls
        bundle.files[ident.env_name] = env_file(ident, seed, nats_url=nats_url, tls=tls)
    configured = {i.user for i in bundle.identities}
    for user, seed in old.seeds.items():
        if user not in configured:
            revoked.add(public_key(seed))
            bundle.removed[user] = old.files[user]
    header = "# NATS accounts and users of the SR-IOV control plane (sriovctl nats-config)."
    bundle.files[SERVER_FILE] = server_config(
        keys, hosts=len(host_ids), tls=server_tls, header=header
    )
    bundle.files[REVOKED_FILE] = (
        "# Public nkeys revoked by `sriovctl nats-config` (rotated or removed); never reused.\n"
        + "".join(f"{k}\n" for k in sorted(revoked))
    )
    return bundle


def read_existing(out: Path) -> Existing:
    """Seeds and revoked keys from an earlier run in ``out`` (nothing when it is new)."""
    seeds: dict[str, str] = {}
    files: dict[str, str] = {}
    for path in sorted(out.glob("*/*.env")):
        env = read_env(path.read_text(encoding="utf-8"))
        user = env.get("SRIOV_NATS_USER")
        if user and env.get("SRIOV_NATS_NKEY_SEED"):
            seeds[user] = env["SRIOV_NATS_NKEY_SEED"]
            files[user] = str(path.relative_to(out))
    revoked_file = out / REVOKED_FILE
    revoked = frozenset(
        line.strip()
        for line in (
            revoked_file.read_text(encoding="utf-8") if revoked_file.exists() else ""
        ).splitlines()
        if line.strip() and not line.startswith("#")
    )
    return Existing(seeds, files, revoked)


def write_bundle(bundle: Bundle, out: Path) -> list[Path]:
    """Write every file with mode 0600 (directories 0700), delete the env files of removed
    users; return the paths written."""
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
    for rel in bundle.removed.values():
        (out / rel).unlink(missing_ok=True)
    return written
