"""hostd's VF configurator: desired VF configuration in, the kernel's read-back out.

``VfConfigurator(sysfs_root, netns)``: ``await apply(pf, n, desired)`` and
``await restore(pf, n)`` return the configuration read back; ``plan`` (pure, in
``reconcile``) says what differs; ``capabilities_for(pf_driver)`` what a PF can apply.
"""

from sriov.hostd.vfconfig.capabilities import DRIVER_CAPABILITIES, capabilities_for
from sriov.hostd.vfconfig.configurator import VfConfigurator, vf_table_for
from sriov.hostd.vfconfig.errors import VfConfigError, VfUnsupported
from sriov.hostd.vfconfig.reconcile import Action, plan, resolve

__all__ = [
    "DRIVER_CAPABILITIES",
    "Action",
    "VfConfigError",
    "VfConfigurator",
    "VfUnsupported",
    "capabilities_for",
    "plan",
    "resolve",
    "vf_table_for",
]
