"""migrate-pending splits the waiting messages into equal batches, as many for every thread."""

from __future__ import annotations

import math

import pytest

from migration.migrate_pending import even_batch_size


@pytest.mark.parametrize(
    ("waiting", "batch_size", "workers", "expected"),
    [
        (10_000, 2000, 2, 1667),  # five batches of 2,000 would leave the fifth to one thread
        (8000, 2000, 2, 2000),  # already even
        (3000, 2000, 2, 1500),
        (1_000_000, 2000, 2, 2000),
        (10_000, 250, 1, 250),
        (1, 2000, 2, 1),
    ],
)
def test_even_batch_size(waiting: int, batch_size: int, workers: int, expected: int) -> None:
    assert even_batch_size(waiting, batch_size, workers) == expected


@pytest.mark.parametrize("waiting", [999, 4001, 10_000, 12_345, 99_999])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_thread_moves_as_many_batches_in_as_few_turns(waiting: int, workers: int) -> None:
    size = even_batch_size(waiting, 2000, workers)
    turns = math.ceil(waiting / (2000 * workers))  # the fewest turns batches of 2,000 allow
    assert size <= 2000
    assert math.ceil(waiting / size) == turns * workers


def test_nothing_waiting_keeps_the_batch_size_for_messages_that_arrive() -> None:
    assert even_batch_size(0, 2000, 2) == 2000
