"""The router: the kombu transport Celery's broker URL points at (``router://``).

It is a PostgreSQL queue transport (:mod:`migration.pgqueue.transport`) that also holds legs to
RabbitMQ and Kafka (:mod:`migration.legs`), and for every task message decides from the live
migration state (:mod:`migration.state`) where to publish it and, on every poll, where to take
one from (SPEC §4):

* ``legacy``: publish to and consume from the PostgreSQL queue;
* ``dual_write``: publish to PostgreSQL inside the submitting transaction and to RabbitMQ after
  it commits (same message id); consume both; the copy the split assigns runs the task, the
  other is a *shadow*: checked against the task row and acknowledged;
* ``messaging``: publish to the target broker after commit; consume it, and PostgreSQL for what
  was published there before the switch.

A broker publish that fails falls back to a PostgreSQL copy marked as the only one, which every
mode consumes, so an accepted task is never left without a message. Celery's events and control
messages (``celery inspect``, Flower) always travel on the PostgreSQL queue, in every mode.
"""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual

from helixagent.config import get_config
from helixagent.logging import get_logger
from migration import envelope, modes
from migration.legs.base import Empty, Leg, LegUnavailable
from migration.legs.postgresql import PostgresLeg
from migration.pgqueue import transport as pgqueue
from tasks.routing import QUEUE_PREFIX

if TYPE_CHECKING:
    from migration.state import Snapshot

log = get_logger("migration.router")
#: seconds before a broker that could not be reached is tried again.
LEG_RETRY = 5.0
#: longest single wait on a broker while idle (PostgreSQL NOTIFYs are checked between waits).
BROKER_WAIT = 0.05
#: shadow copies are checked against their rows this many at a time, in one query, or once the
#: first has waited ``SHADOW_WAIT`` seconds; the rows are marked checked at most that often too.
SHADOW_BATCH = 32
SHADOW_WAIT = 0.2


def current_state() -> Snapshot:
    """The live migration state (imported late: ``celery inspect`` and Flower load this transport
    before Django's apps are ready, and they only ever touch control queues)."""
    from migration import state

    return state.current()


def is_task_queue(queue: str) -> bool:
    return queue.startswith(QUEUE_PREFIX + ".")


def _task_id(message: dict[str, Any]) -> str | None:
    """The task id a copy names, in canonical form; None when it is not a UUID at all."""
    found = envelope.task_id((message.get("headers") or {}).get("id"))
    return str(found) if found else None


def leg_tag(leg: str, generation: int, tag: str) -> str:
    return f"{leg}:{generation}:{tag}"


def split_tag(delivery_tag: str) -> tuple[str, int, str] | None:
    """``(leg, generation, leg tag)`` of a broker delivery; None for a PostgreSQL one."""
    parts = str(delivery_tag).split(":", 2)
    return (parts[0], int(parts[1]), parts[2]) if len(parts) == 3 else None


def open_leg(name: str, consuming: bool = False) -> Leg:
    """Connect a broker leg from the configuration; raises :class:`LegUnavailable`. A consuming
    RabbitMQ leg uses heartbeats: without them the broker keeps the messages a hung or vanished
    worker holds for as long as its TCP connection looks open."""
    config = get_config().messaging
    if name == modes.RABBITMQ:
        from migration.legs.rabbitmq import RabbitMQLeg

        return RabbitMQLeg(config.rabbitmq_url, heartbeat=config.rabbitmq_heartbeat if consuming else 0.0)
    if name == modes.KAFKA:
        from migration.legs.kafka import KafkaLeg

        return KafkaLeg(config.kafka_bootstrap_servers, config.kafka_partitions)
    raise ValueError(f"unknown leg {name!r}")


class QoS(pgqueue.QoS):
    """Sends each acknowledgement to the leg the message came from."""

    def ack(self, delivery_tag: str) -> None:
        parsed = split_tag(delivery_tag)
        if parsed is None:
            super().ack(delivery_tag)
            return
        leg = self.channel.broker_leg(*parsed[:2])
        if leg is not None:
            leg.ack(parsed[2])
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        parsed = split_tag(delivery_tag)
        if parsed is None:
            super().reject(delivery_tag, requeue)
            return
        leg = self.channel.broker_leg(*parsed[:2])
        if leg is not None:
            if requeue:
                leg.requeue(parsed[2])
            else:
                leg.discard(parsed[2])
        self._quick_ack(delivery_tag)

    def held_ids(self) -> list[int]:
        return [pgqueue.row_id(tag) for tag in list(self._delivered) if tag not in self._dirty and ":" not in str(tag)]

    def restore_unacked(self) -> list[Any]:
        for tag in list(self._delivered):
            parsed = split_tag(tag)
            if parsed is not None:
                leg = self.channel.broker_leg(*parsed[:2])
                if leg is not None:
                    leg.requeue(parsed[2])
                self._delivered.pop(tag, None)
        return super().restore_unacked()


class Channel(pgqueue.Channel):
    QoS = QoS

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.legs: dict[str, Leg] = {modes.POSTGRESQL: PostgresLeg(self)}
        self.generations: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._task_queues: set[str] = set()
        self._rotation = 0
        self._shadows: list[tuple[str, int, dict[str, Any], str]] = []  # (leg, generation, message, tag)
        self._shadows_since = 0.0
        self._shadows_seen: list[str] = []  # task ids whose shadow copy was checked
        self._marked_at = 0.0

    # -- legs --------------------------------------------------------------------------------
    def leg(self, name: str) -> Leg | None:
        """The open leg ``name``, connecting it if needed; None while its broker is unreachable."""
        leg = self.legs.get(name)
        if leg is not None or time.monotonic() < self._retry_at.get(name, 0.0):
            return leg
        try:
            leg = open_leg(name, consuming=bool(self._task_queues))
            if self._task_queues:
                leg.consume(sorted(self._task_queues))
        except LegUnavailable as exc:
            log.warning("router.leg_unavailable", extra={"leg": name, "error": str(exc)})
            self._retry_at[name] = time.monotonic() + LEG_RETRY
            return None
        self.generations[name] = self.generations.get(name, 0) + 1
        self.legs[name] = leg
        log.info("router.leg_connected", extra={"leg": name})
        return leg

    def broker_leg(self, name: str, generation: int) -> Leg | None:
        """The leg a delivery came from, if it is still the same connection."""
        return self.legs.get(name) if self.generations.get(name) == generation else None

    def drop_leg(self, name: str, error: Exception) -> None:
        leg = self.legs.pop(name, None)
        log.warning("router.leg_lost", extra={"leg": name, "error": str(error)})
        self._retry_at[name] = time.monotonic() + LEG_RETRY
        if leg is not None:
            try:
                leg.close()
            except Exception:
                log.debug("router.leg_close_failed", exc_info=True)

    def read_leg(self, name: str, leg: Leg, timeout: float) -> None:
        """Take what the broker of ``leg`` has sent, waiting up to ``timeout`` for the first of it."""
        try:
            leg.wait(timeout)
        except LegUnavailable as exc:
            self.drop_leg(name, exc)

    def consuming_brokers(self) -> list[tuple[str, Leg]]:
        return [(n, leg) for n, leg in self.legs.items() if n != modes.POSTGRESQL and self._task_queues]

    # -- publishing --------------------------------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if not is_task_queue(queue):
            super()._put(queue, message)
            return
        headers = message.get("headers") or {}
        if headers.get(modes.LEGS_HEADER):
            targets = tuple(str(headers[modes.LEGS_HEADER]).split("+"))
        else:
            snapshot = current_state()
            targets = modes.publish_legs(snapshot.mode, snapshot.broker)
        copies = {modes.COPIES_HEADER: "sole"}
        if len(targets) > 1:  # both copies name the one that runs the task, from the split as it is now
            runner = modes.executing_source(str(headers.get("id")), current_state().rabbitmq_percent)
            copies = {modes.COPIES_HEADER: "dual", modes.RUNNER_HEADER: runner}
        message["headers"] = {**headers, **copies}
        for name in targets:
            if name == modes.POSTGRESQL:
                self.legs[name].publish(queue, message)
            else:
                self._publish_after_commit(name, queue, message)

    def _publish_after_commit(self, name: str, queue: str, message: dict[str, Any]) -> None:
        """Inside the submitting transaction a broker copy goes to the outbox and leaves after
        commit, so no worker receives a copy of a task it cannot see yet, and a publisher that
        dies in between leaves the copy to the relay."""
        if self.dsn == "django":
            from django.db import transaction

            from migration import gather, outbox

            statement = gather.current()
            if statement is not None:
                task_id = str(message["headers"].get("id"))
                member = outbox.record_in(statement, name, queue, task_id, json.dumps(message))
                statement.after(lambda ids: outbox.publisher.send(ids[member], name, queue, message))
                return
            if transaction.get_connection().in_atomic_block:
                entry = outbox.record(name, queue, str(message["headers"].get("id")), json.dumps(message))
                transaction.on_commit(functools.partial(outbox.publisher.send, entry, name, queue, message))
                return
        self.publish_batch(name, [(queue, message)])

    def publish_batch(self, name: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish to the broker leg ``name`` with confirms, or else as sole PostgreSQL copies.

        A connection that fails is replaced at once, once, before the back-off applies: after a
        broker restart the first publish finds the old connection closed while the broker is up
        again, and without the retry every copy would go to PostgreSQL for ``LEG_RETRY`` seconds."""
        error = f"{name} is unreachable"
        for attempt in (1, 2):
            leg = self.leg(name)
            if leg is None:
                break
            try:
                leg.publish_batch(items)
                return
            except LegUnavailable as exc:
                self.drop_leg(name, exc)
                error = str(exc)
                if attempt == 1:
                    self._retry_at.pop(name, None)
        ids = [(message.get("headers") or {}).get("id") for _queue, message in items]
        log.error("router.publish_fallback", extra={"leg": name, "task_ids": ids, "error": error})
        for queue, message in items:
            fallback = {**message, "headers": {**message["headers"], modes.COPIES_HEADER: "sole"}}
            self.legs[modes.POSTGRESQL].publish(queue, fallback)

    # -- consuming ---------------------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if is_task_queue(queue):
            self._task_queues.add(queue)
            for name, leg in self.consuming_brokers():
                try:
                    leg.consume([queue])
                except LegUnavailable as exc:
                    self.drop_leg(name, exc)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        if not is_task_queue(queue):
            return super()._get(queue)
        snapshot = current_state()
        names = list(modes.consume_legs(snapshot.mode, snapshot.broker))
        names += [name for name in self.legs if name not in names]  # still open: drain it
        self._rotation = (self._rotation + 1) % len(names)
        for name in names[self._rotation :] + names[: self._rotation]:
            leg = self.legs[name] if name == modes.POSTGRESQL else self.leg(name)
            if leg is None:
                continue
            try:
                while True:
                    message, tag = leg.fetch(queue)
                    if self._runs_here(name, message, snapshot):
                        return self._delivered(name, message, tag)
                    self._hold_shadow(name, message, tag)
            except Empty:
                continue
            except LegUnavailable as exc:
                self.drop_leg(name, exc)
        raise virtual.Empty()

    def _runs_here(self, leg: str, message: dict[str, Any], snapshot: Snapshot) -> bool:
        headers = message.get("headers") or {}
        copies = str(headers.get(modes.COPIES_HEADER) or "sole")
        runner = str(headers.get(modes.RUNNER_HEADER) or "")
        return modes.runs_here(leg, copies, snapshot.mode, str(headers.get("id")), snapshot.rabbitmq_percent, runner)

    def _delivered(self, leg: str, message: dict[str, Any], tag: str) -> dict[str, Any]:
        message.setdefault("headers", {})[modes.SOURCE_HEADER] = leg
        if leg != modes.POSTGRESQL:
            message["properties"]["delivery_tag"] = leg_tag(leg, self.generations[leg], tag)
        return message

    def _hold_shadow(self, leg_name: str, message: dict[str, Any], tag: str) -> None:
        """Keep the copy the split did not pick until :meth:`check_shadows` compares a batch of
        them with their task rows in one query (it stays unacknowledged until then)."""
        self._shadows.append((leg_name, self.generations.get(leg_name, 0), message, tag))
        if len(self._shadows) == 1:
            self._shadows_since = time.monotonic()
        if len(self._shadows) >= SHADOW_BATCH:
            self.check_shadows()

    def check_shadows(self, older_than: float = 0.0) -> None:
        """Compare held shadow copies with their task rows (exists, same type, same payload
        checksum), then acknowledge them; with ``older_than``, only once the first has waited
        that long. If the database cannot be read the copies go back to their queues."""
        if not self._shadows or time.monotonic() - self._shadows_since < older_than:
            return
        from django.db import close_old_connections

        from tasks.models import Task

        held, self._shadows = self._shadows, []
        ids = {task_id for task_id in (_task_id(message) for _leg, _gen, message, _tag in held) if task_id}
        try:
            rows = {
                str(pk): (kind, payload)
                for pk, kind, payload in Task.objects.filter(pk__in=ids).values_list("pk", "task_type", "payload")
            }
        except Exception as exc:
            log.warning("router.shadow_check_failed", extra={"count": len(held), "error": str(exc)})
            close_old_connections()
            for name, generation, _message, tag in held:
                leg = self._leg_of(name, generation)
                if leg is not None:
                    leg.requeue(tag)
            return
        for name, generation, message, tag in held:
            leg = self._leg_of(name, generation)
            try:
                self._compare_shadow(name, message, rows)
            except Exception as exc:
                log.warning("router.shadow_check_failed", extra={"leg": name, "error": str(exc)})
                close_old_connections()
                if leg is not None:
                    leg.requeue(tag)
                continue
            if leg is not None:
                leg.ack(tag)

    def _compare_shadow(self, leg_name: str, message: dict[str, Any], rows: dict[str, tuple[str, Any]]) -> None:
        from migration import verifier

        headers = message.get("headers") or {}
        task_id = _task_id(message) or str(headers.get("id"))
        row = rows.get(task_id)
        if row is None:
            verifier.record("orphan_copy", task_id, leg_name, "a shadow copy without a task row")
            return
        mismatch = verifier.problem(row[0], row[1], headers)
        if mismatch:
            verifier.record("mismatch", task_id, leg_name, mismatch)
        self._shadows_seen.append(task_id)

    def _leg_of(self, name: str, generation: int) -> Leg | None:
        return self.legs[name] if name == modes.POSTGRESQL else self.broker_leg(name, generation)

    def flush_shadow_marks(self, older_than: float = 0.0) -> None:
        """Record on the task rows, in one statement, which shadow copies were checked (with
        ``older_than``, only once that many seconds have passed since the last time)."""
        if not self._shadows_seen or time.monotonic() - self._marked_at < older_than:
            return
        from django.db import close_old_connections
        from django.utils import timezone

        from tasks.models import Task

        ids, self._shadows_seen = self._shadows_seen, []
        self._marked_at = time.monotonic()
        try:
            Task.objects.filter(pk__in=ids).update(shadow_checked_at=timezone.now())
        except Exception as exc:  # only the verifier's bookkeeping: it reports the copy as missing
            log.warning("router.shadow_marks_failed", extra={"count": len(ids), "error": str(exc)})
            close_old_connections()

    def close(self) -> None:
        self.check_shadows()
        self.flush_shadow_marks()
        for name in [n for n in self.legs if n != modes.POSTGRESQL]:
            try:
                self.legs.pop(name).close()
            except Exception:
                log.debug("router.leg_close_failed", exc_info=True)
        super().close()


class Transport(pgqueue.Transport):
    """See the module docstring. Transport options are those of the PostgreSQL queue."""

    Channel = Channel  # type: ignore[assignment]
    driver_type = "router"
    driver_name = "router"

    def _idle_wait(self, wait: float) -> None:
        """Wait for a NOTIFY, a broker message or the bell: on all their sockets at once where
        every client has one, else on each broker in short turns (Kafka's client exposes no
        socket). A full prefetch window lets no message out before a task ends: the brokers
        are then read without waiting, and the wait is for the bell."""
        for channel in self.channels:  # nothing to run: settle the shadow copies held so far
            channel.check_shadows()
        brokers = [(channel, name, leg) for channel in self.channels for name, leg in channel.consuming_brokers()]
        if not brokers:
            super()._idle_wait(wait)
            return
        self._wake(self.waiter.woken())
        sockets = [self.waiter.fileno(), *(leg.fileno() for _channel, _name, leg in brokers)]
        if all(fd is not None for fd in sockets):
            readable = self._select(sockets, wait)
            if sockets[0] in readable:
                self._wake(self.waiter.woken())
            for (channel, name, leg), fd in zip(brokers, sockets[1:], strict=True):
                if fd in readable:
                    channel.read_leg(name, leg, 0)
            return
        if self.bell.armed:
            for channel, name, leg in brokers:
                channel.read_leg(name, leg, 0)
            super()._idle_wait(wait)
            return
        self.bell.clear()
        turn = min(wait, BROKER_WAIT) / len(brokers)
        for channel, name, leg in brokers:
            channel.read_leg(name, leg, turn)

    def _maintain(self) -> None:
        super()._maintain()
        for channel in self.channels:
            channel.check_shadows(older_than=SHADOW_WAIT)
            channel.flush_shadow_marks(older_than=SHADOW_WAIT)
            for name, leg in list(channel.consuming_brokers()):
                try:
                    leg.flush()
                    leg.heartbeat()
                except LegUnavailable as exc:
                    channel.drop_leg(name, exc)
