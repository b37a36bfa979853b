"""Each test that reaches the database starts with the broker's queues empty (tests/conftest.py
``_empty_broker``): a message an earlier test left would be taken first by a worker started now.

The two tests run in one test process, in this order (one xdist group)."""

from __future__ import annotations

import pytest

from webmushra import messaging

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("broker-between-tests")]


def test_a_test_that_leaves_messages_behind(broker_is_empty) -> None:
    assert broker_is_empty("render") == 0 and broker_is_empty("default") == 0
    messaging.send_on_commit(messaging.RENDER_JOB, [2_000_000_001, 2_000_000_002])
    messaging.send_on_commit(messaging.BUILD_REPORT, [2_000_000_003])
    assert broker_is_empty("render") == 2 and broker_is_empty("default") == 1


def test_the_next_test_starts_with_empty_queues(broker_is_empty) -> None:
    assert broker_is_empty("render") == 0 and broker_is_empty("default") == 0
