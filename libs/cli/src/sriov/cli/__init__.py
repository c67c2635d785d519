"""sriovctl, the operator's CLI, and sriov-stack, the one-machine launcher."""
