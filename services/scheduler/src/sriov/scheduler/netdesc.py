"""The guide's netdesc form of a net: ``sriov-nic-model=<model>`` or ``sriov-nic-id=<vf id>``.

Either may be followed by ``:<network id or wire>`` (``server-attach-network``'s
``model:network-id`` form), which restricts the VF to that wire or network. VF model names
never contain a colon (none in pci.ids does), so the first colon after the value starts it.

VF settings may follow, each as ``;key=value`` (a MAC holds colons, so they could not follow
a colon): ``sriov-nic-model=ConnectX-5 Virtual Function:net-1;mac=fa:16:3e:00:00:01;vlan=100``.
They start at the first ``;`` followed by ``key=``, so a form that parsed before (a ``;``
inside a model or network name) parses as it did. The keys are :data:`KEYS`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from sriov.common.errors import InvalidRequest
from sriov.common.schemas import VfConfig, limits
from sriov.common.schemas._vfconfig import MAC_PATTERN, VFIO_PCI

MODEL_KEY = "sriov-nic-model"
ID_KEY = "sriov-nic-id"
MAX_LEN = limits.NETDESC_MAX
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FORMS = f"'{MODEL_KEY}=<model>[:<network or wire>]' or '{ID_KEY}=<vf id>[:<network or wire>]'"


class NetSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed net, as the SQL functions take it (``scheduler.matches``)."""

    desc: str
    kind: Literal["model", "id"]
    value: str
    selector: str | None = None
    """Wire or network the VF must be on."""
    config: VfConfig | None = None
    """The VF settings: those after ``;`` here; the request's whole configuration (defaults
    filled in) once :func:`sriov.scheduler.validation.nets` merged the typed ones."""
    given: tuple[str, ...] = ()
    """The VfConfig fields set after ``;`` (a typed config must not set them too)."""
    needs: tuple[str, ...] = ()
    """The settings the net sets away from the baseline (what the VF's PF must be able to
    apply), plus ``lifecycle`` when it sets anything: an unmanaged VF cannot serve it."""
    driver: str | None = None
    """A netdev driver the VF must have (``driver=iavf``); None: vfio-pci or the VF's own."""


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def parse(desc: str, field: str = "net.desc") -> NetSpec:
    """Parse one netdesc; errors name ``field`` and show the accepted forms."""
    text = desc.strip() if isinstance(desc, str) else ""
    if not text:
        raise InvalidRequest(f"{field}: empty net: use {FORMS}", field=field)
    if len(text) > MAX_LEN:
        raise InvalidRequest(f"{field}: longer than {MAX_LEN} characters", field=field)
    start = _SETTINGS.search(text)
    head = text[: start.start()] if start else text
    config, given = settings(text[start.start() :], field) if start else (None, ())
    key, sep, rest = head.partition("=")
    key = key.strip()
    if not sep or key not in (MODEL_KEY, ID_KEY):
        raise InvalidRequest(f"{field}: {desc!r} is not a netdesc: use {FORMS}", field=field)
    value, colon, selector = rest.partition(":")
    value, selector = value.strip(), selector.strip()
    if not value:
        raise InvalidRequest(f"{field}: {desc!r} names no {key.removeprefix('sriov-nic-')} "
                             f"after '{key}=': use {FORMS}", field=field)  # fmt: skip
    if colon and not selector:
        raise InvalidRequest(
            f"{field}: {desc!r} ends with ':' but names no network or wire after it", field=field
        )
    if _CONTROL.search(text):
        raise InvalidRequest(f"{field}: {desc!r} contains control characters", field=field)
    return NetSpec(
        desc=text,
        kind="model" if key == MODEL_KEY else "id",
        value=value,
        selector=selector or None,
        config=config,
        given=given,
    )


# --- VF settings ------------------------------------------------------------------------------
_SETTINGS = re.compile(r";\s*[A-Za-z][A-Za-z0-9_-]*\s*=")
_MAC = re.compile(MAC_PATTERN)
_BOOL = {"on": True, "true": True, "yes": True, "1": True,
         "off": False, "false": False, "no": False, "0": False}  # fmt: skip
#: netdesc key -> (VfConfig field, what a value may be).
KEYS: dict[str, tuple[str, str]] = {
    "mac": ("mac", "a unicast MAC, not all zeros (aa:bb:cc:dd:ee:ff)"),
    "vlan": ("vlan", "a VLAN id 0..4094 (0: untagged)"),
    "qos": ("qos", "an 802.1p priority 0..7"),
    "vlan-proto": ("vlan_proto", "802.1Q or 802.1ad"),
    "spoof-check": ("spoof_check", "on or off"),
    "trust": ("trust", "on or off"),
    "link-state": ("link_state", "auto, enable or disable"),
    "min-rate": ("min_tx_rate", "Mbit/s, 0..4294967295 (0: no limit)"),
    "max-rate": ("max_tx_rate", "Mbit/s, 0..4294967295 (0: no limit)"),
    "driver": ("driver", "vfio-pci (passthrough), netdev (the VF's own driver) or its name"),
}
FIELD_KEYS = {f: k for k, (f, _) in KEYS.items()}


def _value(key: str, raw: str) -> Any:
    """One setting's value, or ValueError."""
    match key:
        case "mac":
            mac = raw.lower()
            if not _MAC.match(mac):
                raise ValueError
            return mac
        case "vlan" | "qos" | "min-rate" | "max-rate":
            return int(raw, 10)
        case "spoof-check" | "trust":
            return _BOOL[raw.lower()]
        case "vlan-proto":
            return {"802.1q": "802.1Q", "802.1ad": "802.1ad"}[raw.lower()]
        case "link-state":
            if raw.lower() not in ("auto", "enable", "disable"):
                raise ValueError
            return raw.lower()
        case _:  # driver
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", raw):
                raise ValueError
            return None if raw == "netdev" else raw


def settings(text: str, field: str) -> tuple[VfConfig, tuple[str, ...]]:
    """``;key=value...`` -> the VfConfig (defaults for what is not set) and the fields set."""
    values: dict[str, Any] = {}
    for item in text.split(";")[1:]:
        key, eq, raw = (p.strip() for p in item.partition("="))
        if not eq:
            raise InvalidRequest(
                f"{field}: {item.strip()!r} is not a setting: use ;key=value with a key of "
                f"{', '.join(KEYS)}", field=field, key=key,
            )  # fmt: skip
        if key not in KEYS:
            raise InvalidRequest(
                f"{field}: unknown setting {key!r}: the keys are {', '.join(KEYS)}",
                field=field, key=key,
            )  # fmt: skip
        name, accepted = KEYS[key]
        if name in values:
            raise InvalidRequest(f"{field}: {key} is set twice", field=field, key=key)
        try:
            values[name] = _value(key, raw)
        except (ValueError, KeyError):
            raise InvalidRequest(
                f"{field}: {key}={raw!r} is not valid: {key} is {accepted}", field=field, key=key
            ) from None
    return config_of(values, field), tuple(values)


def config_of(values: dict[str, Any], field: str) -> VfConfig:
    """A VfConfig from field values, checked as a decoded one is (ranges, min <= max rate)."""
    try:
        return msgspec.convert({"driver": VFIO_PCI, **values}, VfConfig)
    except msgspec.ValidationError as exc:
        found = re.search(r"`\$\.(\w+)`", str(exc))
        if found:  # a range or pattern: name the key and what it accepts
            key = FIELD_KEYS.get(found.group(1), found.group(1))
            problem = f"{key}={values.get(found.group(1))!r} is not valid: {key} is {KEYS[key][1]}"
        else:  # VfConfig.__post_init__: the only cross-field rule
            key = "min-rate"
            problem = (f"min-rate {values.get('min_tx_rate')} is above max-rate "
                       f"{values.get('max_tx_rate')}")  # fmt: skip
        raise InvalidRequest(f"{field}: {problem}", field=field, key=key) from None
