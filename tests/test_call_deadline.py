"""The in-process call deadline (sample_timeout_s) and an outer alarm (pytest-timeout's) coexist."""

from __future__ import annotations

import signal
import time

import pytest

from lightning_rl.envs.vector import CallDeadline, EnvCallTimeout


class OuterAlarm(Exception):
    pass


def _raise_outer(signum, frame):
    raise OuterAlarm


def test_an_outer_alarm_still_fires_inside_a_longer_call_deadline():
    previous = signal.signal(signal.SIGALRM, _raise_outer)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(OuterAlarm), CallDeadline(30.0) as deadline:
            deadline.call_started = time.monotonic()
            deadline.rearm()  # a rebuilt copy re-arms: must not push the outer alarm back
            time.sleep(5)  # interrupted by the outer alarm at 0.3 s
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_hung_call_times_out_and_the_outer_alarm_is_restored():
    previous = signal.signal(signal.SIGALRM, _raise_outer)
    signal.setitimer(signal.ITIMER_REAL, 60.0)
    try:
        with pytest.raises(EnvCallTimeout), CallDeadline(0.2) as deadline:
            deadline.call_started = time.monotonic()
            time.sleep(5)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 50.0 < remaining <= 60.0
        assert signal.getsignal(signal.SIGALRM) is _raise_outer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
