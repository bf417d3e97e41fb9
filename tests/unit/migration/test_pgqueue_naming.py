import hashlib

from migration.pgqueue.sql import notify_channel
from migration.pgqueue.transport import row_id


def test_delivery_tag_carries_the_row_id() -> None:
    assert row_id("42.3") == 42
    assert row_id("7.1") == 7


def test_notify_channel_is_a_short_identifier_derived_from_the_queue() -> None:
    channel = notify_channel("celeryev.0b6e4a1c-9a35-4ad8-9f55-0f3c0e0d2f6b")
    assert channel.startswith("hq_") and len(channel) == 19
    assert channel == "hq_" + hashlib.md5(b"celeryev.0b6e4a1c-9a35-4ad8-9f55-0f3c0e0d2f6b").hexdigest()[:16]
