from tasks import states


def test_claim_is_the_only_way_into_running() -> None:
    sources = {current for current, targets in states.TRANSITIONS.items() if states.RUNNING in targets}
    assert sources == set(states.CLAIMABLE)


def test_terminal_states_have_no_way_out_except_redrive() -> None:
    for status in states.TERMINAL - {states.DEAD_LETTER}:
        assert states.TRANSITIONS[status] == frozenset()
    assert states.TRANSITIONS[states.DEAD_LETTER] == {states.PENDING}


def test_stuck_recovers_to_pending_or_dead_letters() -> None:
    assert states.can_transition(states.RUNNING, states.STUCK)
    assert states.TRANSITIONS[states.STUCK] == {states.PENDING, states.DEAD_LETTER}
    assert not states.can_transition(states.COMPLETED, states.RUNNING)


def test_retry_delay_grows_exponentially_and_is_capped() -> None:
    assert [states.retry_delay(n, 2.0, 300) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert states.retry_delay(20, 2.0, 300) == 300


def test_configured_retry_delay_doubles_each_retry() -> None:
    assert [states.retry_delay(n, 2.0, 300, configured=0.5) for n in range(3)] == [0.5, 1.0, 2.0]
