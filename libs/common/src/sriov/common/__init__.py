"""Shared contract of the SR-IOV control plane: schemas, subjects, bus, telemetry, config."""
