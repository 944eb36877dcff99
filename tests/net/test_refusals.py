"""A flood of refused associations is counted in the audit trail, not listed one by one: every
kind of attempt is there, with how many there were, in a bounded number of records."""

from __future__ import annotations

from pathlib import Path

from app.demo.studies import Patient, ct_study
from app.net.nodes import Node
from app.net.refusals import KINDS, LISTED, OTHERS, Refusal, RefusalDigest
from tests.conftest import VaultEnv
from tests.peers.sender import send
from tests.stress.spoofing import refusals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeats_beyond_the_first_few_are_counted_when_the_window_closes() -> None:
    clock, told = Clock(), []
    digest = RefusalDigest(told.append, window=60, clock=clock)
    spoof, other = Refusal("PACS", "10.0.0.9", "wrong address"), Refusal("CT1", "10.0.0.8", "no certificate")
    for _ in range(40):
        digest(spoof)
    digest(other)
    assert told == [spoof] * LISTED + [other]  # the rest of the flood is counted, not listed
    clock.now += 61
    digest(other)  # a new window: the closed one's count goes first
    assert told[LISTED + 1:] == [Refusal("PACS", "10.0.0.9", "wrong address", repeated=40 - LISTED), other]
    digest.flush()
    assert len(told) == LISTED + 3  # (other's new window held one refusal: nothing more to count)


def test_kinds_beyond_the_bound_are_counted_together() -> None:
    told: list[Refusal] = []
    digest = RefusalDigest(told.append, clock=Clock())
    for i in range(KINDS + 50):
        digest(Refusal(f"AE{i}", "10.0.0.9", "no such AE title"))
    digest.flush()
    others = [r for r in told if (r.calling_ae, r.address, r.why) == OTHERS]
    assert len(told) == KINDS + len(others) and sum(r.repeated or 1 for r in others) == 50


def test_a_flood_of_spoofed_associations_leaves_a_bounded_count_in_the_trail(env: VaultEnv,
                                                                              tmp_path: Path) -> None:
    env.vault.nodes.add(env.login("admin"), Node("pacs", "PACS", "127.0.0.3", 104))
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    tries = LISTED + 7
    try:
        study = ct_study(Patient("PID-FLOOD", "Flood^Victim"), slices=1, size=16)
        for _ in range(tries):
            assert not send(server.port, study, calling="PACS", source="127.0.0.2").established
        assert len(refusals(env, at_least=LISTED)) == LISTED
    finally:
        server.stop()
    alerts = refusals(env)
    assert len(alerts) == LISTED + 1 and alerts[0].detail["repeated"] == tries - LISTED
    assert sum(int(str(a.detail.get("repeated", 1))) for a in alerts) == tries
