"""Can a broker be reached right now? Asked before a mode switch that needs it."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kombu import Connection

from helixagent.config import Config

TIMEOUT = 3.0


def reach(broker: str, config: Config) -> str | None:
    """None when ``broker`` answers within a few seconds, else what went wrong."""
    try:
        if broker == "rabbitmq":
            with Connection(config.messaging.rabbitmq_url, connect_timeout=TIMEOUT) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=TIMEOUT)
        elif broker == "kafka":
            admin = AdminClient(
                {
                    "bootstrap.servers": config.messaging.kafka_bootstrap_servers,
                    "socket.timeout.ms": int(TIMEOUT * 1000),
                    "log_level": 0,  # the error is returned; librdkafka need not print each retry
                }
            )
            admin.list_topics(timeout=TIMEOUT)
        else:
            return f"unknown broker {broker!r}"
    except (OSError, KafkaException) as exc:
        return str(exc) or exc.__class__.__name__
    except Exception as exc:  # kombu wraps connection errors in its own types
        return f"{exc.__class__.__name__}: {exc}"
    return None
