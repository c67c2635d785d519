"""One base error for the project and a small hierarchy.

Every error carries a stable ``code`` (what a program matches on) and a message a person can
act on. Services turn them into NATS service errors with the same code; the CLI prints the
message.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar


class SriovError(Exception):
    """Base of every error this project raises on purpose."""

    code: ClassVar[str] = "internal"
    #: Numeric code carried in the ``Nats-Service-Error-Code`` header (HTTP-like).
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(SriovError):
    """A configuration file, environment variable or CLI argument is wrong."""

    code = "invalid_config"
    status = 400


class InvalidRequest(SriovError):
    """A request or message is malformed; ``field`` names what is wrong."""

    code = "invalid_request"
    status = 400


class UnknownMessageType(InvalidRequest):
    """A message's ``type`` tag is not one this build knows."""

    code = "unknown_type"


class NotFound(SriovError):
    code = "not_found"
    status = 404


class Conflict(SriovError):
    code = "conflict"
    status = 409


class NoCapacity(Conflict):
    code = "no_capacity"


class UnknownModel(SriovError):
    code = "unknown_model"
    status = 404


class DeviceBusy(Conflict):
    code = "device_busy"


class HostOffline(SriovError):
    code = "host_offline"
    status = 503


class Unavailable(SriovError):
    """A dependency (NATS, PostgreSQL, OVSDB, ovs-vswitchd) cannot be reached."""

    code = "unavailable"
    status = 503


class BusError(Unavailable):
    """The message bus refused or could not be reached."""

    code = "bus_unavailable"


class BusTimeout(BusError, asyncio.TimeoutError):
    """A request over the bus had no answer in time; catch as either base."""

    code = "timeout"
    status = 504


class SysfsError(SriovError):
    """sysfs is missing a file, has a dangling link or holds a value we cannot parse."""

    code = "sysfs_error"
    status = 500


#: Every error class by its stable code, so a client can raise the server's error type.
ERRORS_BY_CODE: dict[str, type[SriovError]] = {
    cls.code: cls
    for cls in (
        SriovError,
        ConfigError,
        InvalidRequest,
        UnknownMessageType,
        NotFound,
        Conflict,
        NoCapacity,
        UnknownModel,
        DeviceBusy,
        HostOffline,
        Unavailable,
        BusError,
        BusTimeout,
        SysfsError,
    )
}


def error_from_code(code: str, message: str, **details: Any) -> SriovError:
    """Rebuild the error a service reported (unknown codes become the base error)."""
    cls = ERRORS_BY_CODE.get(code, SriovError)
    err = cls(message, **details)
    if cls is SriovError and code != SriovError.code:
        err.code = code  # type: ignore[misc]
    return err
