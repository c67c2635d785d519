"""The JetStream stream catalogue and its provisioning (create-or-update)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from sriov.common import subjects as subj
from sriov.common.errors import BusError


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    description: str
    last_value: bool = False
    """Keep only the last message per subject (current state, not history)."""
    max_age_s: float = 0
    duplicate_window_s: float = 120


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        subj.STREAM_HOST_EVENTS,
        [subj.HOST_EVENTS_ALL],
        "hostd events: snapshots, VF/PF diffs, links, heartbeats, diagnostics",
        max_age_s=7 * 86400,
    ),
    StreamSpec(
        subj.STREAM_STATE,
        [subj.DEVICE_STATE_ALL, subj.HOST_STATE_ALL],
        "inventory's current device and host state, last value per subject",
        last_value=True,
    ),
    StreamSpec(
        subj.STREAM_PLACEMENT,
        [subj.PLACEMENT_EVENTS_ALL],
        "placement events: reserved, confirmed, released, expired, lost, failed",
        max_age_s=30 * 86400,
    ),
    StreamSpec(
        subj.STREAM_PLACEMENT_REQUESTS,
        [subj.PLACEMENT_REQUESTS_ALL],
        "asynchronous placement requests from other systems",
        max_age_s=7 * 86400,
    ),
    StreamSpec(
        subj.STREAM_OFFLOAD,
        [subj.OFFLOAD_EVENTS_ALL],
        "offload agent events: config changes, NIC checks, flow audits",
        max_age_s=7 * 86400,
    ),
    StreamSpec(
        subj.STREAM_DEAD_LETTER,
        [subj.DEAD_LETTER_ALL],
        "messages a consumer gave up on, with the reason in headers",
        max_age_s=30 * 86400,
    ),
)


def stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=spec.subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_msgs_per_subject=1 if spec.last_value else -1,
        max_age=spec.max_age_s or None,
        discard=DiscardPolicy.OLD,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
        allow_direct=True,
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
