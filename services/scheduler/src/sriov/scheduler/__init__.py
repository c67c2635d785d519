"""sriov-scheduler: VF placement."""
