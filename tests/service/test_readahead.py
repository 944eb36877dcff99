"""Read-ahead through the socket: instances fetched ahead in the direction of reading, within the
window, and what was ahead of an old place dropped after a jump."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.errors import NotPermitted
from app.service.readahead import ReadAhead

ORDER = [f"1.2.{i}" for i in range(40)]


class Service:
    """Stands in for the socket's frame_data: records what was asked, answers the uid's bytes."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def fetch(self, uid: str) -> bytes:
        with self.lock:
            self.asked.append(uid)
        if uid == "refused":
            raise NotPermitted("Open the series before its images.")
        return uid.encode()


@pytest.fixture
def pool():
    with ThreadPoolExecutor(3) as executor:
        yield executor


def test_reading_forward_fetches_each_instance_once_and_stays_within_the_window(pool):
    service = Service()
    ahead = ReadAhead(ORDER, service.fetch, pool, window=4)
    assert [ahead.get(uid) for uid in ORDER] == [uid.encode() for uid in ORDER]
    pool.shutdown(wait=True)
    assert sorted(service.asked) == sorted(ORDER)  # none twice, none beyond the series


def test_reading_backward_fetches_behind_and_a_jump_drops_the_old_place(pool):
    service = Service()
    ahead = ReadAhead(ORDER, service.fetch, pool, window=4)
    for i in (31, 30, 29):
        ahead.get(ORDER[i])
    ahead.get(ORDER[30])  # one read out of order (two threads) does not turn the direction
    assert ahead.get(ORDER[28]) == ORDER[28].encode()
    pool.shutdown(wait=True)
    assert {ORDER[i] for i in range(24, 28)} <= set(service.asked)  # the four behind 28, read backward
    assert {27, 26, 25, 24} <= set(ahead._pending) <= set(range(24, 31))  # the window, and two behind
    with ThreadPoolExecutor(3) as fresh:
        ahead._pool = fresh
        ahead.get(ORDER[5])  # a jump: what was ahead of 29 is no longer held
        assert set(ahead._pending) == {1, 2, 3, 4}  # (onward in the direction of the jump)


def test_a_refusal_reaches_the_reader_and_an_instance_of_another_series_is_fetched_plainly(pool):
    service = Service()
    ahead = ReadAhead([*ORDER[:3], "refused"], service.fetch, pool, window=4)
    ahead.get(ORDER[0])
    with pytest.raises(NotPermitted):
        ahead.get("refused")
    assert ahead.get("9.9.9") == b"9.9.9"
