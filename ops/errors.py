"""Errors of the operator tooling: the local broker and the mesh of workers."""

from shared.contract.errors import ConvmeshError


class BrokerError(ConvmeshError):
    """The local Kafka broker could not be installed, started or reached."""


class MeshError(ConvmeshError):
    """Starting, stopping or inspecting the service workers failed."""
