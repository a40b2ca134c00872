"""Errors of a process's configuration."""

from shared.contract.errors import ConvmeshError


class ConfigError(ConvmeshError):
    """Settings or topics.yaml are missing, malformed or inconsistent."""
