import pytest

from tasks.routing import queue_for


@pytest.mark.parametrize(
    ("task_type", "queue"),
    [
        ("llm_request", "helixagent.tasks.llm"),
        ("llm.request", "helixagent.tasks.llm"),
        ("debate", "helixagent.tasks.debate"),
        ("debate.round", "helixagent.tasks.debate"),
        ("verification", "helixagent.tasks.verification"),
        ("verify", "helixagent.tasks.verification"),
        ("notification", "helixagent.tasks.notifications"),
        ("notify", "helixagent.tasks.notifications"),
        ("noop", "helixagent.tasks.background"),
        ("anything.else", "helixagent.tasks.background"),
    ],
)
def test_task_types_route_to_the_spec_queues(task_type: str, queue: str) -> None:
    assert queue_for(task_type) == queue
