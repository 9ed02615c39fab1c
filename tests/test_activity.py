"""serve --idle-exit's clock (server/service/activity.py), with a fake clock."""

from __future__ import annotations

from styleserver.service.activity import Activity


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_time_counts_from_the_start():
    clock = Clock()
    activity = Activity(clock)
    clock.now += 5
    assert activity.idle_for() == 5


def test_a_call_in_progress_is_never_idle():
    clock = Clock()
    activity = Activity(clock)
    activity.begin()
    clock.now += 1000
    assert activity.idle_for() == 0


def test_idle_time_counts_from_the_end_of_the_last_call():
    clock = Clock()
    activity = Activity(clock)
    activity.begin()
    activity.begin()
    clock.now += 50
    activity.end()
    clock.now += 10
    assert activity.idle_for() == 0  # one is still in progress
    activity.end()
    clock.now += 3
    assert activity.idle_for() == 3


def test_a_touch_restarts_the_idle_time():
    clock = Clock()
    activity = Activity(clock)
    clock.now += 30
    activity.touch()
    clock.now += 2
    assert activity.idle_for() == 2
