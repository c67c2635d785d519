"""sriov-offload: OVS hw-offload control and audit."""
