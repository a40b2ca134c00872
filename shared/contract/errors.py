"""The root of every error convmesh raises on purpose, and the contract's own.

Each subsystem has its own error module whose classes derive from
``ConvmeshError``: ``shared.runtime.errors`` (settings), ``shared.kafka.errors``
(topics), ``ops.errors`` (broker and mesh). Code that catches errors catches
the narrowest one it can handle; anything else propagates and is handled by the
failing-message policy of the agent (dead-letter topic) or crashes the command
with a clear message.
"""


class ConvmeshError(Exception):
    """Root of every error convmesh raises on purpose."""


class InvalidEvent(ConvmeshError):
    """An input record breaks a rule of the contracts.

    ``reason`` is a stable machine code (written to the dead-letter topic),
    ``message`` a human explanation that never contains plaintext identifiers.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
