"""Every SQL statement of the queue, for PostgreSQL and for the embedded SQLite fallback.

The two dialects differ only where they must: PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``
(concurrent workers never wait for each other's rows) and uses ``= ANY(%s)`` for id lists;
SQLite serialises writers itself and expands id lists.
"""

from __future__ import annotations

import hashlib

from helixagent.prepared import ASYNC_COMMIT

# --- PostgreSQL (psycopg placeholders) ---------------------------------------------------------
# Leases, acks and releases commit without waiting for the WAL flush (ASYNC_COMMIT): a database
# crash that loses one makes a message visible again, and the claim on its task row keeps a task
# that already ran from running twice. A put stays durable: it is an accepted message.
PG_PUT = (
    "INSERT INTO helix_queue_message"
    " (queue, priority, payload, visible_at, delivery_count, expires_at, created_at, message_id)"
    " VALUES (%s, %s, %s, %s, 0, %s, %s, %s)"
)
PG_CLAIM = f"""
UPDATE helix_queue_message SET visible_at = %(lease)s, delivery_count = delivery_count + 1
WHERE id IN (
    SELECT id FROM helix_queue_message
    WHERE queue = %(queue)s AND visible_at <= %(now)s AND (expires_at IS NULL OR expires_at > %(now)s)
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AND {ASYNC_COMMIT}
RETURNING id, priority, payload, delivery_count
"""
PG_ACK = f"DELETE FROM helix_queue_message WHERE id = ANY(%s) AND {ASYNC_COMMIT}"
PG_RELEASE = f"UPDATE helix_queue_message SET visible_at = %s WHERE id = ANY(%s) AND {ASYNC_COMMIT}"
PG_EXTEND = f"UPDATE helix_queue_message SET visible_at = %s WHERE id = ANY(%s) AND visible_at > %s AND {ASYNC_COMMIT}"

# --- SQLite (qmark placeholders; id lists are expanded by the caller) ---------------------------
SQLITE_PUT = PG_PUT.replace("%s", "?")
SQLITE_CLAIM = """
UPDATE helix_queue_message SET visible_at = :lease, delivery_count = delivery_count + 1
WHERE id IN (
    SELECT id FROM helix_queue_message
    WHERE queue = :queue AND visible_at <= :now AND (expires_at IS NULL OR expires_at > :now)
    ORDER BY priority DESC, id
    LIMIT :limit
)
RETURNING id, priority, payload, delivery_count
"""
SQLITE_ACK = "DELETE FROM helix_queue_message WHERE id IN ({ids})"
SQLITE_RELEASE = "UPDATE helix_queue_message SET visible_at = ? WHERE id IN ({ids})"
SQLITE_EXTEND = "UPDATE helix_queue_message SET visible_at = ? WHERE id IN ({ids}) AND visible_at > ?"

# --- shared (both dialects accept these after placeholder translation) --------------------------
SIZE = "SELECT count(*) FROM helix_queue_message WHERE queue = %s AND (expires_at IS NULL OR expires_at > %s)"
PURGE = "DELETE FROM helix_queue_message WHERE queue = %s"
DELETE_BINDINGS = "DELETE FROM helix_queue_binding WHERE queue = %s"
BIND = """
INSERT INTO helix_queue_binding (exchange, exchange_type, routing_key, pattern, queue, message_ttl, expires, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (exchange, routing_key, queue)
DO UPDATE SET last_seen = excluded.last_seen, exchange_type = excluded.exchange_type,
              message_ttl = excluded.message_ttl, expires = excluded.expires
"""
UNBIND = "DELETE FROM helix_queue_binding WHERE exchange = %s AND routing_key = %s AND queue = %s"
BINDINGS = "SELECT exchange, exchange_type, routing_key, pattern, queue, message_ttl FROM helix_queue_binding"
TOUCH_BINDINGS = "UPDATE helix_queue_binding SET last_seen = %s WHERE queue = %s"
EXPIRED_QUEUES = "SELECT DISTINCT queue FROM helix_queue_binding WHERE expires IS NOT NULL AND last_seen + expires < %s"
DROP_EXPIRED_MESSAGES = "DELETE FROM helix_queue_message WHERE expires_at IS NOT NULL AND expires_at <= %s"


def notify_channel(queue: str) -> str:
    """The LISTEN/NOTIFY channel of ``queue``; must match ``helix_queue_channel()`` in SQL."""
    return "hq_" + hashlib.md5(queue.encode()).hexdigest()[:16]


#: PostgreSQL-only schema additions applied by the Django migration: one NOTIFY per queue per
#: inserting statement, delivered at commit, on the channel :func:`notify_channel` names.
PG_NOTIFY_TRIGGER = """
CREATE OR REPLACE FUNCTION helix_queue_channel(q text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT 'hq_' || left(md5(q), 16) $$;

CREATE OR REPLACE FUNCTION helix_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE q text;
BEGIN
    FOR q IN SELECT DISTINCT queue FROM inserted LOOP
        PERFORM pg_notify(helix_queue_channel(q), '');
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS helix_queue_notify ON helix_queue_message;
CREATE TRIGGER helix_queue_notify AFTER INSERT ON helix_queue_message
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION helix_queue_notify();
"""
PG_NOTIFY_TRIGGER_DROP = """
DROP TRIGGER IF EXISTS helix_queue_notify ON helix_queue_message;
DROP FUNCTION IF EXISTS helix_queue_notify();
DROP FUNCTION IF EXISTS helix_queue_channel(text);
"""
