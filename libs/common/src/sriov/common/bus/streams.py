"""The JetStream stream catalogue, its provisioning (create-or-update) and its verification.

Provisioning belongs to one identity (the stream admin, or the embedded launcher); running
services only read each stream's configuration and refuse to start on one that differs from
the catalogue (sealed, other subjects, lower limits or replicas), naming what differs.

Limits are sized for a 10,000-host fleet restarting at once (issue 13), from measured sizes:
a snapshot of a host with 64 VFs encodes to 18 KB (one with 1,024 VFs to 280 KB), a heartbeat
to 155 bytes, a device state to 630 bytes; each stored message adds about 350 bytes of
headers (CloudEvents, trace context, ``Nats-Msg-Id``) and its subject. So the storm (every
host's snapshot and first heartbeat) stores about 190 MB in ``SRIOV_HOST_EVENTS``, and
``SRIOV_STATE`` holds 640,000 VFs in about 650 MB. Every stream caps message size, bytes and
(where the subject names its writer) messages per subject, so one writer can only churn its
own history. Discard policy: a stream of history drops its oldest messages when full (what
matters is current, and a snapshot repairs a gap); a stream of current state or of requests
refuses the new one (the writer retries; nothing pending is silently lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from sriov.common import subjects as subj
from sriov.common.errors import BusError

KiB, MiB, GiB = 1024, 1024**2, 1024**3


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    description: str
    last_value: bool = False
    """Keep only the last message per subject (current state, not history)."""
    max_age_s: float = 0
    duplicate_window_s: float = 120
    max_bytes: int = GiB
    max_msg_size: int = 64 * KiB
    per_subject: int = -1
    """History kept per subject (1 for a last-value stream): a writer that floods its own
    subjects evicts only its own older messages there."""
    discard_new: bool = False
    """Full: refuse new messages (the writer sees the error and retries) rather than evict
    old ones. Chosen where eviction would lose current state or someone's pending request."""


STREAMS: tuple[StreamSpec, ...] = (
    # History read by inventory's durable; 256 per subject covers four VF events per VF of a
    # 64-VF host between two reads. 16 GiB holds the storm (~190 MB) many times over, so a
    # restart never evicts an unread snapshot; full, the oldest history goes first (a host's
    # new heartbeat matters more than last week's) and a snapshot resync repairs any gap.
    # Refusing instead would turn away the restarting hosts' snapshots themselves.
    StreamSpec(
        subj.STREAM_HOST_EVENTS,
        [subj.HOST_EVENTS_ALL],
        "hostd events: snapshots, VF/PF diffs, links, heartbeats, diagnostics",
        max_age_s=7 * 86400,
        max_bytes=16 * GiB,
        max_msg_size=MiB,
        per_subject=256,
    ),
    # Current state, one message per VF and host: 640,000 VFs (~650 MB) fit six times over,
    # and a storm only replaces values (one per subject), it does not add to them. Evicting
    # would silently drop a VF's current state from every replay, so full refuses instead
    # (inventory's outbox keeps the state and retries).
    StreamSpec(
        subj.STREAM_STATE,
        [subj.DEVICE_STATE_ALL, subj.HOST_STATE_ALL],
        "inventory's current device and host state, last value per subject",
        last_value=True,
        max_bytes=4 * GiB,
        max_msg_size=64 * KiB,
        discard_new=True,
    ),
    # Lifecycle history per guest and verb; old history may go, the durables read it soon.
    StreamSpec(
        subj.STREAM_PLACEMENT,
        [subj.PLACEMENT_EVENTS_ALL],
        "placement events: reserved, ready, confirmed, released, expired, lost, failed",
        max_age_s=30 * 86400,
        max_bytes=4 * GiB,
        max_msg_size=256 * KiB,
        per_subject=64,
    ),
    # Other systems' requests: a flood is refused to its sender, never evicts a pending one.
    StreamSpec(
        subj.STREAM_PLACEMENT_REQUESTS,
        [subj.PLACEMENT_REQUESTS_ALL],
        "asynchronous placement requests from other systems",
        max_age_s=7 * 86400,
        max_bytes=GiB,
        max_msg_size=64 * KiB,
        per_subject=16,
        discard_new=True,
    ),
    StreamSpec(
        subj.STREAM_OFFLOAD,
        [subj.OFFLOAD_EVENTS_ALL],
        "offload agent events: config changes, NIC checks, flow audits",
        max_age_s=7 * 86400,
        max_bytes=4 * GiB,
        max_msg_size=MiB,
        per_subject=64,
    ),
    # Desired state, one message per VF: like SRIOV_STATE, refuse rather than forget.
    StreamSpec(
        subj.STREAM_DESIRED,
        [subj.DESIRED_ALL],
        "the scheduler's desired state of each VF, last value per VF subject",
        last_value=True,
        max_bytes=2 * GiB,
        max_msg_size=64 * KiB,
        discard_new=True,
    ),
    # Copies of messages given up on (up to a host event's size); the newest matter most.
    StreamSpec(
        subj.STREAM_DEAD_LETTER,
        [subj.DEAD_LETTER_ALL],
        "messages a consumer gave up on, with the reason in headers",
        max_age_s=30 * 86400,
        max_bytes=2 * GiB,
        max_msg_size=MiB,
        per_subject=10_000,
    ),
)


def spec_of(name: str) -> StreamSpec:
    return next(s for s in STREAMS if s.name == name)


def stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=spec.subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_msgs_per_subject=1 if spec.last_value else spec.per_subject,
        max_bytes=spec.max_bytes,
        max_msg_size=spec.max_msg_size,
        max_age=spec.max_age_s or None,
        discard=DiscardPolicy.NEW if spec.discard_new else DiscardPolicy.OLD,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
        allow_direct=True,
        deny_delete=True,
        deny_purge=True,
    )


async def ensure_streams(js: JetStreamContext, specs: Sequence[StreamSpec], replicas: int) -> None:
    """Create or update every stream (see :meth:`Bus.ensure_streams`)."""
    for spec in specs:
        cfg = stream_config(spec, replicas)
        try:
            try:
                await js.add_stream(cfg)
            except nats.js.errors.BadRequestError:
                info = await js.stream_info(spec.name)
                cfg.num_replicas = info.config.num_replicas
                await js.update_stream(cfg)
        except TimeoutError as exc:
            raise BusError(
                f"JetStream did not answer creating stream {spec.name}: is JetStream "
                "enabled (nats-server -js), and may this identity create streams "
                "($JS.API.STREAM.CREATE/UPDATE)?",
                stream=spec.name,
            ) from exc
        except nats.js.errors.APIError as exc:  # sealed (10052), limits, placement...
            raise BusError(
                f"JetStream refused to provision stream {spec.name}: {exc.description} "
                f"(err_code {exc.err_code}); repair or recreate it with the stream admin",
                stream=spec.name,
            ) from exc


def _differences(spec: StreamSpec, cfg: StreamConfig, replicas: int) -> list[str]:
    want = stream_config(spec, replicas)
    found: list[str] = []

    def differ(field: str, got: object, expected: object) -> None:
        found.append(f"{field} is {got!r}, expected {expected!r}")

    if cfg.sealed:
        differ("sealed", True, False)
    if sorted(cfg.subjects or []) != sorted(want.subjects or []):
        differ("subjects", cfg.subjects, want.subjects)
    for field in ("retention", "discard", "max_msgs_per_subject", "max_bytes", "max_msg_size"):
        got, expected = getattr(cfg, field), getattr(want, field)
        if got != expected:
            differ(field, getattr(got, "value", got), getattr(expected, "value", expected))
    if (cfg.num_replicas or 1) < replicas:
        differ("num_replicas", cfg.num_replicas, f">= {replicas}")
    for field in ("deny_delete", "deny_purge"):
        if not getattr(cfg, field):
            differ(field, False, True)
    return found


UNAVAILABLE_RETRY_S = 60
"""How long a start-up check waits out a JetStream that times out or answers 503 (a node
restarted or cut off, its streams electing leaders) before it reports JetStream as absent."""


async def _stream_info_through_election(js: JetStreamContext, name: str) -> StreamInfo:
    deadline = time.monotonic() + UNAVAILABLE_RETRY_S
    while True:
        try:
            return await js.stream_info(name)
        except (TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def verify_streams(js: JetStreamContext, specs: Sequence[StreamSpec], replicas: int) -> None:
    """Read (never change) each stream's configuration; a missing stream or one that differs
    from the catalogue is a :class:`BusError` naming the stream and every field that differs."""
    for spec in specs:
        try:
            info = await _stream_info_through_election(js, spec.name)
        except nats.js.errors.NotFoundError as exc:
            raise BusError(
                f"stream {spec.name} does not exist: provision the streams with the stream "
                "admin identity (sriovctl streams-provision) before starting the services",
                stream=spec.name,
            ) from exc
        except TimeoutError as exc:
            raise BusError(
                f"JetStream did not answer about stream {spec.name} (is JetStream enabled, "
                f"and may this identity read $JS.API.STREAM.INFO.{spec.name}?)",
                stream=spec.name,
            ) from exc
        diffs = _differences(spec, info.config, replicas)
        if diffs:
            raise BusError(
                f"stream {spec.name} differs from the catalogue: {'; '.join(diffs)}. "
                "Someone changed it: re-provision it with the stream admin identity",
                stream=spec.name,
            )
