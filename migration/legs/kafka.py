"""The Kafka leg: the work topic ``helixagent.tasks`` when Kafka is the target broker.

Publishing: key = task id (a task's messages stay in one partition), the queue name in a
header, an idempotent producer with ``acks=all``; :meth:`KafkaLeg.publish` returns once the
broker has the message. Consuming: group ``helixagent-group``; the topic has
``kafka_partitions`` partitions so several worker processes share it. A message counts as
unfinished from the moment it is fetched until the router acknowledges it, and the leg commits,
per partition, only the offset of the lowest unfinished message (or one past the last fetched
when none is unfinished), so a worker that dies never commits past a task that had not ended;
its partitions move to another worker, which receives those messages again (the claim on the
task row keeps a finished task from running twice).

A consumer that has been outside its group for :data:`REJOIN_TIMEOUT` is replaced by a new one:
after a broker restart librdkafka can leave a consumer that never joins again, and a worker
would then wait forever while its share of the topic goes unread.

A work topic deleted and made again (by an operator, or by a producer's auto-creation) starts its
offsets from 0, but librdkafka goes on fetching each partition from its old position and skips
every message below it (confluentinc/librdkafka#3255). The leg reads the topic's id every
:data:`TOPIC_CHECK_INTERVAL` seconds; when it changes, the leg gives the topic its partitions
back and reads its partitions again from the start. Each commit carries the id of the topic it
was made on, so an offset committed on the old topic (by this worker or another) is not taken
for a position on the new one: such a partition is read from the start when it is assigned.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # type: ignore[attr-defined]

from helixagent.logging import get_logger
from migration import envelope
from migration.legs.base import Empty, Leg, LegUnavailable, message_id

log = get_logger("migration.kafka")
#: the clients' own lines (librdkafka's), kept apart so that repeats can be held back
client_log = get_logger("migration.kafka.client")
WORK_TOPIC = "helixagent.tasks"
EVENTS_TOPIC = "helixagent.events.tasks"
GROUP = "helixagent-group"
#: the queue of a record without a ``queue`` header.
DEFAULT_QUEUE = "helixagent.tasks.background"
COMMIT_INTERVAL = 1.0
PUBLISH_TIMEOUT = 10.0
#: most messages taken from the consumer's local queue per wait.
PREFETCH = 200
#: seconds a subscribed consumer may go without a group membership before it is replaced; a
#: rejoin after an outage normally takes one session timeout (10 s) once the broker answers.
REJOIN_TIMEOUT = 60.0
#: seconds ``close`` waits for the final commit and the group leave (a healthy broker: milliseconds).
CLOSE_TIMEOUT = 5.0
#: seconds between two reads of the work topic's id (and of librdkafka's metadata: a partition
#: added to the topic is consumed after at most this long).
TOPIC_CHECK_INTERVAL = 10.0
#: seconds a read of the topic's id may take.
TOPIC_READ_TIMEOUT = 5.0


def producer_config(servers: str, linger_ms: int = 1) -> dict[str, Any]:
    """An idempotent ``acks=all`` producer; ``linger_ms`` is how long it gathers a batch."""
    return {
        "bootstrap.servers": servers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "message.timeout.ms": int(PUBLISH_TIMEOUT * 1000),
        "logger": client_log,
    }


def ensure_topics(servers: str, partitions: int, topics: Iterable[str] = (WORK_TOPIC, EVENTS_TOPIC)) -> None:
    """Create the topics with ``partitions`` partitions, or add partitions to one that has fewer.

    Raising ``messaging.kafka_partitions`` thus takes effect at the next start, for more worker
    processes to share the work topic. Kafka cannot take partitions away: a topic with more
    keeps them. A task's messages are keyed by its id, so a retry published after the growth
    may land in another partition than its first message; each delivery stands alone (the claim
    on the task row keeps one execution), so nothing depends on where it lands."""
    settings: dict[str, Any] = {"bootstrap.servers": servers, "logger": client_log}
    admin = AdminClient(settings)
    names = list(topics)
    created = admin.create_topics([NewTopic(name, partitions, 1) for name in names], operation_timeout=10)
    for topic, future in created.items():
        try:
            future.result(15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LegUnavailable(f"kafka: cannot create {topic}: {exc}") from exc
    found = {name: len(topic.partitions) for name, topic in admin.list_topics(timeout=10).topics.items()}
    fewer = {name: found[name] for name in names if name in found and found[name] < partitions}
    if not fewer:
        return
    growth = admin.create_partitions([NewPartitions(topic, partitions) for topic in fewer], operation_timeout=10)
    for topic, future in growth.items():
        try:
            future.result(15)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.INVALID_PARTITIONS:
                continue  # another process starting at the same time added them first
            raise LegUnavailable(f"kafka: cannot add partitions to {topic}: {exc}") from exc
        log.info("kafka.partitions_added", extra={"topic": topic, "before": fewer[topic], "now": partitions})


class MembershipWatch:
    """Tells when a consumer has been outside its group for longer than ``timeout`` seconds.

    Every group member has a member id, even one given no partition; librdkafka clears it when
    the session ends and sets a new one when the consumer joins again."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self.outside_since: float | None = None

    def stalled(self, member_id: str | None) -> bool:
        """Note the member id just read; true once it has been missing for ``timeout``."""
        if member_id:
            self.outside_since = None
            return False
        now = self.clock()
        if self.outside_since is None:
            self.outside_since = now
        return now - self.outside_since >= self.timeout

    def reset(self) -> None:
        self.outside_since = None


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        log.warning("kafka.consumer_close_failed", extra={"error": str(exc)})


class KafkaLeg(Leg):
    name = "kafka"

    def __init__(self, servers: str, partitions: int = 8, rejoin_timeout: float = REJOIN_TIMEOUT) -> None:
        self.servers = servers
        self.partitions = partitions
        try:
            ensure_topics(servers, partitions)
        except KafkaException as exc:
            raise LegUnavailable(f"kafka: {exc}") from exc
        self.producer = Producer(producer_config(servers))
        self.consumer: Consumer | None = None
        self._buffers: dict[str, deque[tuple[dict[str, Any], str]]] = {}
        self._unfinished: dict[int, set[int]] = {}  # partition → offsets fetched and not acknowledged
        self._next: dict[int, int] = {}  # partition → one past the highest offset fetched
        self._committed: dict[int, int] = {}
        self._held: dict[str, tuple[str, dict[str, Any]]] = {}  # tag → (queue, message) until acked
        self._done: list[tuple[str, str]] = []
        self._done_lock = threading.Lock()
        self._committed_at = 0.0
        self._membership = MembershipWatch(rejoin_timeout)
        self._foreign_queues: set[str] = set()  # queues named by records, not consumed here (logged once)
        self._admin: AdminClient | None = None  # reads the topic's id; made by ``consume``
        self._topic_id = ""  # of the work topic, as last read; "" until read
        self._topic_checked_at = 0.0
        self._topic_read: Future[Any] | None = None  # a read of the topic's id under way

    # -- publishing --------------------------------------------------------------------------
    def publish(self, queue: str, message: dict[str, Any]) -> None:
        self.publish_batch([(queue, message)])

    def publish_batch(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Produce every message, then wait once for all delivery reports (``acks=all``)."""
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, _msg: Any) -> None:
            if error is not None:
                errors.append(error)

        try:
            for queue, message in items:
                self.producer.produce(
                    WORK_TOPIC,
                    key=message_id(message).encode(),
                    value=json.dumps(message).encode(),
                    headers={"queue": queue.encode()},
                    on_delivery=delivered,
                )
            left = self.producer.flush(PUBLISH_TIMEOUT)
        except (KafkaException, BufferError) as exc:
            raise LegUnavailable(f"kafka: {exc}") from exc
        if left or errors:
            raise LegUnavailable(f"kafka: publish not confirmed ({errors[0] if errors else 'timed out'})")

    # -- consuming ---------------------------------------------------------------------------
    def consume(self, queues: Iterable[str]) -> None:
        for queue in queues:
            self._buffers.setdefault(queue, deque())
        if self.consumer is None:
            if self._admin is None:
                settings: dict[str, Any] = {"bootstrap.servers": self.servers, "logger": client_log}
                self._admin = AdminClient(settings)
            self._topic_id = self._read_topic_id()
            self._topic_checked_at = time.monotonic()
            self.consumer = self._subscribe()

    def _subscribe(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.servers,
                "group.id": GROUP,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 600_000,
                "topic.metadata.refresh.interval.ms": int(TOPIC_CHECK_INTERVAL * 1000),
                "logger": client_log,
            }
        )
        consumer.subscribe([WORK_TOPIC], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
        self._membership.reset()
        return consumer

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("kafka.assigned", extra={"partitions": [p.partition for p in partitions]})
        if not partitions:  # the group has more consumers than the topic has partitions
            log.warning(
                "kafka.no_partitions",
                extra={"topic": WORK_TOPIC, "hint": "this worker gets no work: raise messaging.kafka_partitions"},
            )
            return
        self._note_topic_id(consumer, self._read_topic_id())
        if not self._topic_id:
            return
        try:
            committed = consumer.committed(partitions, timeout=5)
        except KafkaException as exc:  # the group's own offsets apply, as without this check
            log.warning("kafka.committed_unread", extra={"error": str(exc)})
            return
        stale = [p.partition for p in committed if p.offset >= 0 and p.metadata and p.metadata != self._topic_id]
        if not stale:
            return
        log.warning("kafka.stale_offsets_rewound", extra={"topic": WORK_TOPIC, "partitions": stale})
        for p in committed:
            if p.partition in stale:
                p.offset = OFFSET_BEGINNING
        consumer.assign(committed)

    def _describe(self, timeout: float) -> Future[Any]:
        assert self._admin is not None, "consume() makes the admin client"
        return self._admin.describe_topics(TopicCollection([WORK_TOPIC]), request_timeout=timeout)[WORK_TOPIC]

    def _read_topic_id(self, timeout: float = TOPIC_READ_TIMEOUT) -> str:
        """The work topic's id, read now and waited for at most ``timeout``; "" if not read."""
        future = self._describe(timeout)
        wait([future], timeout)
        return self._topic_id_from(future) if future.done() else ""

    def _topic_id_from(self, future: Future[Any]) -> str:
        """The id a finished read found; "" when it failed. A missing topic is made again, with
        its partitions, rather than left to a producer's auto-creation (the broker's default)."""
        try:
            return str(future.result(0).topic_id)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.warning("kafka.topic_unread", extra={"topic": WORK_TOPIC, "error": str(exc)})
                return ""
        try:
            ensure_topics(self.servers, self.partitions)
        except LegUnavailable as exc:
            log.warning("kafka.topic_unread", extra={"topic": WORK_TOPIC, "error": str(exc)})
        return ""

    def _watch_topic(self, consumer: Consumer) -> None:
        """Every :data:`TOPIC_CHECK_INTERVAL`, read the work topic's id without waiting for it:
        the read is started on one turn and its answer taken on a later one, so a broker that
        does not answer never holds the worker's loop."""
        if self._topic_read is None:
            if time.monotonic() - self._topic_checked_at >= TOPIC_CHECK_INTERVAL:
                self._topic_read = self._describe(TOPIC_READ_TIMEOUT)
            return
        if not self._topic_read.done():
            return
        future, self._topic_read = self._topic_read, None
        self._topic_checked_at = time.monotonic()
        self._note_topic_id(consumer, self._topic_id_from(future))

    def _note_topic_id(self, consumer: Consumer, current: str) -> None:
        """A new id means the topic was deleted and made again: give it its partitions back and
        read what this worker is assigned from the start. A message delivered twice is harmless
        (the claim runs a task once); a skipped one would be lost."""
        if not current or current == self._topic_id:
            return
        before, self._topic_id = self._topic_id, current
        if not before:
            return
        log.warning("kafka.topic_recreated", extra={"topic": WORK_TOPIC, "before": before, "now": current})
        try:
            ensure_topics(self.servers, self.partitions)
        except LegUnavailable as exc:
            log.warning("kafka.partitions_not_restored", extra={"error": str(exc)})
        assigned = consumer.assignment()
        self._forget({p.partition for p in assigned} | set(self._next) | set(self._unfinished))
        for p in assigned:
            try:
                consumer.seek(TopicPartition(WORK_TOPIC, p.partition, OFFSET_BEGINNING))
            except KafkaException as exc:  # not fetched yet: it starts from its committed offset
                log.warning("kafka.rewind_failed", extra={"partition": p.partition, "error": str(exc)})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move to another worker: commit what is safe and forget the rest."""
        if consumer is not self.consumer:
            return  # a replaced consumer closing: the leg forgot its partitions already
        self._commit(force=True)
        self._forget({p.partition for p in partitions})
        log.info("kafka.revoked", extra={"partitions": sorted(p.partition for p in partitions)})

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The session ended (the broker hung or went away) and other workers may own these
        partitions already: forget them without committing. A commit would be refused, and a
        synchronous one waits for the coordinator, which would stall this worker, mode changes
        included, for as long as the broker does not answer."""
        if consumer is not self.consumer:
            return
        self._forget({p.partition for p in partitions})
        log.warning("kafka.partitions_lost", extra={"partitions": sorted(p.partition for p in partitions)})

    def _forget(self, gone: set[int]) -> None:
        """Drop what the leg holds of these partitions: their messages come again from the
        committed offset to whichever consumer gets them next."""
        for buffer in self._buffers.values():
            kept = [(m, tag) for m, tag in buffer if int(tag.split(":")[0]) not in gone]
            buffer.clear()
            buffer.extend(kept)
        for partition in gone:
            self._unfinished.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)

    def _replace(self, old: Consumer) -> Consumer:
        """Subscribe a new consumer in place of one that stopped rejoining its group. The old one
        closes on a thread of its own: a request still queued in it can hold its close for as
        long as the broker leaves that request unanswered."""
        log.warning("kafka.consumer_replaced", extra={"outside_group_seconds": self._membership.timeout})
        self._forget(set(self._next) | set(self._unfinished))
        self.consumer = self._subscribe()
        threading.Thread(target=_close_quietly, args=(old,), name="kafka-consumer-close", daemon=True).start()
        return self.consumer

    def fetch(self, queue: str) -> tuple[dict[str, Any], str]:
        buffer = self._buffers.get(queue)
        if not buffer:
            self.wait(0)
            buffer = self._buffers.get(queue)
            if not buffer:
                raise Empty()
        message, tag = buffer.popleft()
        self._held[tag] = (queue, message)
        return message, tag

    def wait(self, timeout: float) -> None:
        """Read what the broker has sent; block up to ``timeout`` for the first message only.

        ``consume(n, timeout)`` blocks until it has ``n`` messages or the timeout passes, so
        waiting with it would hold a lone new message for the whole turn: the first message is
        awaited with ``poll``, the rest taken without blocking."""
        consumer = self.consumer
        if consumer is None:
            time.sleep(timeout)
            return
        try:
            if self._membership.stalled(consumer.memberid()):
                consumer = self._replace(consumer)
            self._watch_topic(consumer)
            first = consumer.poll(timeout)
            records = [] if first is None else [first, *consumer.consume(num_messages=PREFETCH - 1, timeout=0)]
        except KafkaException as exc:
            raise LegUnavailable(f"kafka: {exc}") from exc
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka.consume_error", extra={"error": str(error)})
                continue
            partition, offset, value = record.partition(), record.offset(), record.value()
            if partition is None or offset is None:
                continue
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)
            try:
                message = envelope.read(value or b"")
                queue = self._queue_of(record)
            except envelope.Unreadable as exc:  # never unfinished: the next commit passes over it
                log.error(
                    "kafka.unreadable_message",
                    extra={
                        "topic": WORK_TOPIC,
                        "partition": partition,
                        "offset": offset,
                        "problem": str(exc),
                        "sample": envelope.sample(value or b""),
                    },
                )
                continue
            self._buffers[queue].append((message, f"{partition}:{offset}"))
            self._unfinished.setdefault(partition, set()).add(offset)

    def _queue_of(self, record: Any) -> str:
        """The consumed queue a record goes to: the one its ``queue`` header names when this
        worker consumes it, else the first this worker consumes. Every queue shares the topic and
        the group hands partitions out regardless of queues, so a record left for another worker
        would never reach one, and its offset would hold every commit of its partition back."""
        raw = dict(record.headers() or []).get("queue") or b""
        try:
            queue = (raw.decode() if isinstance(raw, bytes) else raw) or DEFAULT_QUEUE
        except UnicodeDecodeError:
            raise envelope.Unreadable("its 'queue' header is not UTF-8") from None
        if queue in self._buffers:
            return queue
        consumed = next(iter(self._buffers))
        if queue not in self._foreign_queues:
            self._foreign_queues.add(queue)
            log.warning("kafka.queue_not_consumed", extra={"queue": queue, "runs_from": consumed})
        return consumed

    def ack(self, tag: str) -> None:
        with self._done_lock:
            self._done.append(("ack", tag))

    def requeue(self, tag: str) -> None:
        with self._done_lock:
            self._done.append(("requeue", tag))

    def discard(self, tag: str) -> None:
        """Kafka has no dead-letter queue here: the offset is simply passed."""
        self.ack(tag)

    def flush(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for action, tag in done:
            queue, message = self._held.pop(tag, (None, None))
            partition, offset = (int(part) for part in tag.split(":"))
            if action == "requeue" and queue is not None and partition in self._next:
                self._buffers.setdefault(queue, deque()).appendleft((message, tag))  # type: ignore[arg-type]
            else:
                self._unfinished.get(partition, set()).discard(offset)
        self._commit()

    def _commit(self, force: bool = False) -> None:
        consumer = self.consumer  # read once: ``close`` may let go of it meanwhile
        if consumer is None or (not force and time.monotonic() - self._committed_at < COMMIT_INTERVAL):
            return
        self._committed_at = time.monotonic()
        offsets = []
        for partition, following in self._next.items():
            unfinished = self._unfinished.get(partition)
            safe = min(unfinished) if unfinished else following
            if safe > self._committed.get(partition, -1):
                offsets.append(TopicPartition(WORK_TOPIC, partition, safe, metadata=self._topic_id))
                self._committed[partition] = safe
        if offsets:
            try:
                if force:
                    consumer.commit(offsets=offsets, asynchronous=False)
                else:
                    consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                log.warning("kafka.commit_failed", extra={"error": str(exc)})

    def depth(self, queue: str) -> int:
        """Consumer lag of the group on the work topic (all queues share it). A partition whose
        committed offset lies past its end (the topic was deleted and made again) counts as 0:
        the group holds nothing of it to read."""
        consumer = Consumer({"bootstrap.servers": self.servers, "group.id": GROUP, "logger": client_log})
        try:
            metadata = consumer.list_topics(WORK_TOPIC, timeout=5).topics[WORK_TOPIC]
            parts = [TopicPartition(WORK_TOPIC, p) for p in metadata.partitions]
            lag = 0
            for committed in consumer.committed(parts, timeout=5):
                _low, high = consumer.get_watermark_offsets(committed, timeout=5)
                lag += max(0, high - max(committed.offset, _low)) if committed.offset >= 0 else high - _low
            return lag
        finally:
            consumer.close()

    def close(self) -> None:
        """Commit what is safe, leave the group and deliver what the producer holds. The
        consumer's part runs on a thread of its own and is waited for at most
        :data:`CLOSE_TIMEOUT`: a synchronous commit, and a close with a commit outstanding, wait
        for as long as a hung broker does not answer, and the worker stopping (or dropping the
        leg) would wait with them."""
        consumer = self.consumer
        if consumer is not None:
            closer = threading.Thread(
                target=self._close_consumer, args=(consumer,), name="kafka-consumer-close", daemon=True
            )
            closer.start()
            closer.join(CLOSE_TIMEOUT)
            if closer.is_alive():
                log.warning("kafka.close_timed_out", extra={"seconds": CLOSE_TIMEOUT})
            self.consumer = None
        self.producer.flush(5)

    def _close_consumer(self, consumer: Consumer) -> None:
        try:
            self.flush()
            self._commit(force=True)
        finally:
            _close_quietly(consumer)
