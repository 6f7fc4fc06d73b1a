"""Ray Serve REST scoring of the registered ensemble.

Importing `tune` first sets Ray's loopback-only environment before `ray` is imported
(see tune/__init__.py): a local Serve run must not open Ray's ports to the network.
"""
import tune  # noqa: F401
