"""Containers: launch specs, isolation, cgroups, lifecycle, logs and exec."""
