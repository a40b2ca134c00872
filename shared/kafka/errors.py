"""Errors of the topic registry and of the cluster's topics."""

from shared.contract.errors import ConvmeshError
from shared.runtime.errors import ConfigError


class TopicRegistryError(ConfigError):
    """topics.yaml does not describe a valid set of topics."""


class TopicsError(ConvmeshError):
    """The cluster refused to create declared topics, or they never became visible."""
