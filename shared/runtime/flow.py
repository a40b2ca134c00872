"""Flow control that never empties the stream queues of a flow already running.

Faust (through mode's ``FlowControlEvent``) empties every stream queue on each
``flow_control.resume()``. That is right once, when a rebalance's suspension
ends: the queues may then hold records of the old assignment, read again after
the seek. But recovery calls ``resume()`` a second time at its very end
(``Recovery._resume_streams`` / ``on_recovery_completed``), after it has
resumed the stream partitions and while it awaits ``perform_seek``: the
fetcher runs meanwhile, and the records it delivers from the committed offset
sit in the queues when the second ``resume()`` empties them. They were taken
from Kafka and counted as read (the consumer's position and, for gapless
topics, ``InOrderConsumer``'s next offset are past them), but no agent ever
sees them and nothing acks them:

* when later records of the partition arrive and are acked, the commit stays
  held at the first lost one until ``heal_stalled`` reads the partition again
  (30 s later);
* when the lost records were the partition's last (a restart catching up a
  backlog that nobody adds to), nothing is ever acked past them: the partition
  stalls with its lag for good, and the conversions that needed those records
  are never attributed (seen on CI after a kill -9 and restart: up to 200
  records per partition of ads.engagements and identity.signals, for minutes).

Here ``resume()`` empties the queues only when the flow was suspended. Records
delivered while the flow ran are kept: they come in order from the committed
offset, and one delivered twice around the seek is a redelivery, which every
agent treats idempotently. A stale record of an older assignment is still
dropped, by the stream's own generation check.
"""

from __future__ import annotations

from mode.utils.queues import FlowControlEvent


class KeepQueuedFlowControl(FlowControlEvent):
    """``FlowControlEvent`` whose ``resume()`` clears the queues only after a ``suspend()``."""

    def resume(self) -> None:
        if self.is_active():
            return  # already running: nothing to resume, and nothing queued to drop
        super().resume()
