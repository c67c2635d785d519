"""sriov-hostd: host discovery and link events."""
