"""sriov-inventory: fleet device table and queries."""
