"""One root error for the project, one subclass per subsystem.

Code that catches errors catches the narrowest subsystem error it can handle;
anything else propagates and is handled by the failing-message policy of the
agent (dead-letter topic) or crashes the command with a clear message.
"""


class ConvmeshError(Exception):
    """Root of every error convmesh raises on purpose."""


class ConfigError(ConvmeshError):
    """Settings or topics.yaml are missing, malformed or inconsistent."""


class TopicRegistryError(ConfigError):
    """topics.yaml does not describe a valid set of topics."""


class BrokerError(ConvmeshError):
    """The local Kafka broker could not be installed, started or reached."""


class TopicsError(ConvmeshError):
    """The cluster refused to create declared topics, or they never became visible."""


class MeshError(ConvmeshError):
    """Starting, stopping or inspecting the service workers failed."""


class InvalidEvent(ConvmeshError):
    """An input record breaks a rule of the contracts.

    ``reason`` is a stable machine code (written to the dead-letter topic),
    ``message`` a human explanation that never contains plaintext identifiers.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
