"""The worker's consumer: Celery's own, except for a message whose body it cannot decode.

Celery logs such a message and acknowledges it, so RabbitMQ drops it. HelixAgent's task queues
are dead-lettered to ``helixagent.dlq``, and that is where an operator looks for a message that
could not be processed: the message is rejected without requeue instead, and RabbitMQ moves it
there. (The PostgreSQL queue deletes a rejected message and Kafka passes over it: neither has a
dead-letter queue, as before.)
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.consumer import MESSAGE_DECODE_ERROR, crit, dump_body
from kombu.utils.encoding import safe_repr


class Consumer(CeleryConsumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Log the message as Celery does, then reject it without requeue."""
        crit(
            MESSAGE_DECODE_ERROR,
            exc,
            message.content_type,
            message.content_encoding,
            safe_repr(message.headers),
            dump_body(message, message.body),
            exc_info=1,
        )
        message.reject(requeue=False)
