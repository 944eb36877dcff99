"""Spoofed senders (issue 22), as figures: a plain sender claiming a node's AE title from another
address, an AE title no node has, a TLS sender with another node's certificate from the site's CA
or one from another CA, a plain sender while the site requires TLS, and plain DICOM out to a plain
node then. Each try must be refused (A-ASSOCIATE-RJ, or at the TLS handshake), store nothing and
leave a Security Alert (the first LISTED of a kind one by one, the rest of a flood counted in one
record when its window closes); the real node, from its own address or with its own certificate, still
sends (else the figure starts with FAILED).

Shared by the CI subset (tests/stress/test_spoofing.py) and the long runner (tests/stress/run.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from app.audit.events import EventType
from app.audit.report import AuditQuery, AuditRecord
from app.demo.studies import Patient, ct_study
from app.errors import CustodianError
from app.net.nodes import Node
from app.net.refusals import LISTED
from app.security.roles import Role
from app.security.tls import TlsIdentity
from app.vault.pacs import ASSOCIATION_REFUSED
from tests.conftest import VaultEnv, make_env, study_bytes
from tests.peers.dcmtk import StoreScp
from tests.peers.pki import Authority, Issued
from tests.peers.sender import Sent, send
from tests.stress.attacks import Attack

ATTEMPTS = 20
VICTIM = Patient("PID-SPOOF-VICTIM", "Existing^Patient")


def refusals(env: VaultEnv, alert: str = ASSOCIATION_REFUSED, *, at_least: int = 0) -> list[AuditRecord]:
    """The Security Alerts of this kind, newest first. A refusal at the TLS handshake is recorded
    just after the sender hears of it, so this waits (briefly) until there are ``at_least``."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in env.vault._gate._audit.records(AuditQuery(event_type=EventType.SECURITY_ALERT,
                                                                      limit=None))
                 if e.detail.get("alert") == alert]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _tried(env: VaultEnv, what: str, attempts: int, attempt: Callable[[], Sent],
           control: Callable[[], bool] | None, refused_as: str) -> Attack:
    """``attempts`` spoofed associations, then the real node's own (``control``) that must succeed."""
    attack, before, times = Attack(f"{what} ({attempts} tries)"), len(refusals(env)), []
    started = time.perf_counter()
    for _ in range(attempts):
        clock = time.perf_counter()
        sent = attempt()
        times.append(time.perf_counter() - clock)
        attack.attempts += 1
        attack.got_in += sent.established or sent.stored > 0
    attack.seconds = time.perf_counter() - started
    listed = min(attempts, LISTED)
    audited = len(refusals(env, at_least=before + listed)) - before
    problems = [f"{audited} Security Alerts for {attempts} tries"] if audited != listed else []
    problems += ["the real node could not send"] if control is not None and not control() else []
    attack.figure = ("FAILED: " + "; ".join(problems) + "; " if problems else "") + (
        f"refused {refused_as} in {statistics.median(times) * 1000:.0f} ms (median); {audited} Security "
        f"Alerts, {attempts - audited} more counted in one" + ("; the real node still sends" if control
                                                                 is not None else ""))
    return attack


def _plain(env: VaultEnv, attempts: int) -> list[Attack]:
    study = ct_study(VICTIM, slices=1, size=16)
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    try:
        def control() -> bool:
            return send(server.port, ct_study(Patient("PID-REAL-PACS", "Real^Node"), slices=1, size=16),
                        calling="PACS", source="127.0.0.3").stored == 1
        return [
            _tried(env, "plain sender from 127.0.0.2 claiming the AE title of the node at 127.0.0.3",
                   attempts, lambda: send(server.port, study, calling="PACS", source="127.0.0.2"),
                   control, "with A-ASSOCIATE-RJ (calling AE title not recognised)"),
            _tried(env, "an AE title no node has", attempts,
                   lambda: send(server.port, study, calling="STRANGER", source="127.0.0.3"), control,
                   "with A-ASSOCIATE-RJ (calling AE title not recognised)")]
    finally:
        server.stop()


def _tls(env: VaultEnv, site: Authority, certificates: dict[str, Issued], attempts: int) -> list[Attack]:
    study = ct_study(VICTIM, slices=1, size=16)
    outsider = Authority(site.folder.parent / "outsider", "Outsider CA").issue("ct-1")
    env.vault.nodes.set_scp_tls(env.login("admin"), TlsIdentity.from_files(
        site.cert, certificates["workstation-7"].cert, certificates["workstation-7"].key))
    server = env.vault.pacs.storage_scp(port=0)
    server.start()
    try:
        def control() -> bool:
            return send(server.port, ct_study(Patient("PID-REAL-CT", "Real^Node"), slices=1, size=16),
                        calling="CT1", tls=(site, certificates["ct-1"])).stored == 1
        return [
            _tried(env, "TLS sender with the MR's certificate (site CA) claiming the CT's AE title", attempts,
                   lambda: send(server.port, study, calling="CT1", tls=(site, certificates["mr-1"])),
                   control, "with A-ASSOCIATE-RJ (calling AE title not recognised)"),
            _tried(env, "TLS sender with a certificate for the CT's name from another CA", attempts,
                   lambda: send(server.port, study, calling="CT1", tls=(site, outsider)), control,
                   "at the TLS handshake")]
    finally:
        server.stop()
        env.vault.nodes.set_scp_tls(env.login("admin"), None)


def _required(env: VaultEnv, work: Path, attempts: int) -> list[Attack]:
    """The site's require_tls: a plain sender from the node's own address, and plain DICOM out to a
    node that answers it."""
    admin = env.login("admin")
    peer = StoreScp(work / "storescp")
    peer.start()
    try:
        env.vault.nodes.add(admin, Node("plainpacs", "STORESCP", "127.0.0.1", peer.port))
        env.vault.nodes.echo(admin, "plainpacs")  # it answers, until the site requires TLS
        env.vault.admin.set_policy(admin, "require_tls", "on")
        server = env.vault.pacs.storage_scp(port=0)
        server.start()
        try:
            incoming = _tried(env, "plain sender from the node's own address while the site requires TLS",
                              attempts, lambda: send(server.port, ct_study(VICTIM, slices=1, size=16),
                                                     calling="PACS", source="127.0.0.3"),
                              None, "with A-ASSOCIATE-RJ")
        finally:
            server.stop()
        return [incoming, _plain_out(env, attempts)]
    finally:
        env.vault.admin.set_policy(admin, "require_tls", "off")
        peer.stop()


def _plain_out(env: VaultEnv, attempts: int) -> Attack:
    attack = Attack(f"plain C-ECHO to a plain node while the site requires TLS ({attempts} tries)")
    started = time.perf_counter()
    for _ in range(attempts):
        attack.attempts += 1
        try:
            env.vault.nodes.echo(env.login("admin"), "plainpacs")
            attack.got_in += 1  # (here: a plain association made)
        except CustodianError:
            pass
    attack.seconds = time.perf_counter() - started
    attack.figure = "refused before connecting, in a plain sentence, though the node answers plain DICOM"
    return attack


def run_all(work: Path, attempts: int = ATTEMPTS) -> list[Attack]:
    env = make_env(work / "spoofed")
    try:
        admin = env.login("admin")
        site = Authority(work / "pki")
        certificates = {name: site.issue(name) for name in ("workstation-7", "ct-1", "mr-1")}
        env.vault.nodes.add(admin, Node("pacs", "PACS", "127.0.0.3", 104))
        env.vault.nodes.add(admin, Node("ct", "CT1", "127.0.0.4", 104, peer_name="ct-1"))
        env.vault.nodes.add(admin, Node("mr", "MR1", "127.0.0.5", 104, peer_name="mr-1"))
        env.add("tech", Role.TECHNOLOGIST)
        env.vault.intake.import_bytes(env.login("tech"), study_bytes(VICTIM, slices=1, size=16))
        attacks = [*_plain(env, attempts), *_tls(env, site, certificates, attempts),
                   *_required(env, work, attempts)]
        spoofed = len(env.vault.reading.studies(env.login("tech"), VICTIM.patient_id)) - 1
        if spoofed:
            attacks[0].figure = (f"FAILED: {spoofed} spoofed studies under the patient; "
                                 + attacks[0].figure.removeprefix("FAILED: "))
        return attacks
    finally:
        env.vault.close()
