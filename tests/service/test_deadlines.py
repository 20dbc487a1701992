"""One thread for all time limits: due items expire in order, discarded ones never."""

from __future__ import annotations

import threading
import time

from skyshard.service.deadlines import Deadlines


def _collector():
    fired: list = []
    event = threading.Event()

    def expire(item) -> None:
        fired.append(item)
        event.set()

    return fired, event, expire


def test_items_expire_in_deadline_order_and_discarded_ones_never():
    fired, _, expire = _collector()
    d = Deadlines(expire)
    try:
        d.add("late", 0.25)
        d.add("gone", 0.05)
        d.add("early", 0.1)
        d.discard("gone")
        d.discard("never-added")  # no error
        deadline = time.monotonic() + 5
        while len(fired) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert fired == ["early", "late"]
        assert len(d) == 0
    finally:
        d.close()


def test_adding_again_replaces_the_deadline():
    fired, event, expire = _collector()
    d = Deadlines(expire)
    try:
        d.add("q", 30)
        d.add("q", 0.05)
        assert event.wait(5) and fired == ["q"]
    finally:
        d.close()


def test_many_discarded_items_do_not_pile_up():
    fired, _, expire = _collector()
    d = Deadlines(expire)
    try:
        for i in range(1000):
            d.add(i, 600)
            d.discard(i)
        assert len(d) == 0 and len(d._heap) <= 64 + 1
        assert fired == []
    finally:
        d.close()


def test_a_failing_expiry_does_not_stop_the_others():
    fired = []
    done = threading.Event()

    def expire(item) -> None:
        if item == "bad":
            raise RuntimeError("boom")
        fired.append(item)
        done.set()

    d = Deadlines(expire)
    try:
        d.add("bad", 0.01)
        d.add("good", 0.05)
        assert done.wait(5) and fired == ["good"]
    finally:
        d.close()


def test_close_stops_the_thread_and_drops_what_is_pending():
    fired, _, expire = _collector()
    d = Deadlines(expire)
    d.add("q", 0.05)
    d.close()
    time.sleep(0.15)
    assert fired == []
    d.add("after", 0.01)  # ignored once closed
    time.sleep(0.05)
    assert fired == [] and len(d) == 0
