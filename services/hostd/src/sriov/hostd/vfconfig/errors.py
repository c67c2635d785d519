"""Errors of the VF configurator; each names the PF, the VF and the setting."""

from __future__ import annotations

from sriov.common.errors import SriovError


class VfConfigError(SriovError):
    """A VF could not be brought to (or verified in) the configuration asked for."""

    code = "vf_config_failed"
    status = 500


class VfUnsupported(VfConfigError):
    """The PF's driver cannot apply a setting (``details["settings"]`` lists them)."""

    code = "vf_unsupported"
    status = 400
