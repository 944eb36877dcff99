"""Smart cards as directory users' second factor against real peers: OpenLDAP slapd checks the
password and gives the role, a SoftHSM2 token is the card (its key made on it; the certificate a
test CA issued), the CRL a file. A refusal by the card holder's doing counts toward the lockout
like a wrong code; a card that cannot be checked (the CRL unreadable) refuses plainly, counted not."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from pkcs11 import Attribute, CertificateType, ObjectClass

from app.audit.log import AuditRecord
from app.errors import AuthenticationFailed, CustodianError, UsageError
from app.security import card as cards
from app.security.card import CardRefused, CardUnavailable
from app.security.directory import DirectoryConfig, parse_mapping
from app.security.roles import Role
from app.vault.card import REVOKED_ALERT
from app.vault.directory import DirectoryRefused
from tests.conftest import ADMIN_PASSWORD, Cli, VaultEnv, make_env
from tests.peers.cards import KEY_ID, PIN, Card, CardAuthority, _open
from tests.peers.pki import Site
from tests.peers.slapd import PLAIN, SERVICE_PASSWORD, Person, Slapd, group_dn, running, site_directory

PEOPLE = [Person("alice", "alice directory pw 1", ("radiologists",)),
          Person("lena", "lena directory pw 22", ("librarians",))]
PASSWORDS = {p.uid: p.password for p in PEOPLE}


@dataclass
class Peers:
    server: Slapd
    site: Site
    ca: CardAuthority
    other_ca: CardAuthority
    card: Card
    crl: Path

    def config(self, **changes: object) -> DirectoryConfig:
        librarians = parse_mapping([f"librarian={group_dn('librarians', PLAIN)}"])
        base = site_directory(self.server, self.site)
        return replace(base, **{"roles": base.roles + librarians, "second_factor": "card",
                                "card_ca": self.ca.pem.read_text(), "crl": str(self.crl), **changes})


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    folder = tmp_path_factory.mktemp("cards")
    ca = CardAuthority(folder / "ca", "Hospital Card CA")
    with running(folder, PEOPLE, ("radiologists", "librarians")) as (server, site):
        yield Peers(server, site, ca, CardAuthority(folder / "other", "Another Card CA"),
                    Card.make(folder / "card"), ca.crl(folder / "cards.crl"))


@pytest.fixture
def env(tmp_path: Path, peers: Peers, monkeypatch: pytest.MonkeyPatch) -> Iterator[VaultEnv]:
    """A vault whose directory users' second factor is the card of ``peers`` (alice's, valid)."""
    monkeypatch.setenv("SOFTHSM2_CONF", str(peers.card.conf))
    monkeypatch.setenv(cards.MODULE_ENV, peers.card.module)
    peers.card.put(peers.ca.issue(peers.card.public, "alice@hospital.example"))
    peers.ca.crl(peers.crl)
    e = make_env(tmp_path / "home")
    e.vault.admin.set_directory(e.login("admin"), peers.config(), SERVICE_PASSWORD)
    yield e
    e.vault.close()


def logins(env: VaultEnv, name: str) -> list[AuditRecord]:
    """``name``'s login events, oldest first."""
    return [r for r in reversed(env.vault._gate._audit.records()) if r.user == name and r.type == "login"]


def test_a_valid_card_logs_in_and_a_revoked_or_unreadable_one_is_refused(env: VaultEnv, peers: Peers) -> None:
    session = env.vault.accounts.login("alice", PASSWORDS["alice"], PIN)[1]
    assert session.user.directory and session.user.role is Role.RADIOLOGIST
    assert logins(env, "alice")[-1].detail == {"method": "card", "offline": False, "recovery_code": False}
    with pytest.raises(CustodianError, match="second factor is your card"):  # no TOTP is set up for her
        env.vault.accounts.begin_first_enrolment("alice", PASSWORDS["alice"])
    assert env.vault.accounts.unlock(session, PASSWORDS["alice"], PIN).user.name == "alice"
    assert logins(env, "alice")[-1].detail == {"unlock": True, "method": "card"}

    revoked = peers.ca.issue(peers.card.public, "alice@hospital.example")
    peers.card.put(revoked)
    peers.ca.crl(peers.crl, (revoked,))
    with pytest.raises(DirectoryRefused, match="has been revoked"):  # counted, as a wrong code (below)
        env.vault.accounts.login("alice", PASSWORDS["alice"], PIN)
    assert logins(env, "alice")[-1].detail == {"method": "card", "why": cards.REVOKED}
    alerts = [r.detail["alert"] for r in env.vault._gate._audit.records() if r.type == "security-alert"]
    assert alerts == [REVOKED_ALERT]

    peers.crl.write_text("not a CRL")  # fails closed; not the holder's failure: no AuthenticationFailed
    with pytest.raises(CardUnavailable, match=r"revocation list \(.*\) cannot be read") as unusable:
        env.vault.accounts.login("alice", PASSWORDS["alice"], PIN)
    assert not isinstance(unusable.value, AuthenticationFailed)  # (only those count toward the lockout)
    assert logins(env, "alice")[-1].detail == {"method": "card", "why": cards.CRL_UNUSABLE}


@pytest.mark.parametrize("case", ["expired", "not yet valid", "another CA", "someone else's",
                                  "another domain's"])
def test_a_card_not_valid_for_the_user_is_refused_with_the_reason(
        peers: Peers, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.setenv("SOFTHSM2_CONF", str(peers.card.conf))
    public, alice = peers.card.public, "alice@hospital.example"
    cert, reason, why = {
        "expired": (peers.ca.issue(public, alice, days=(-30, -1)), "certificate expired on", cards.EXPIRED),
        "not yet valid": (peers.ca.issue(public, alice, days=(1, 30)), "not valid yet", cards.NOT_YET),
        "another CA": (peers.other_ca.issue(public, alice), "not issued by the site's card CA",
                       cards.OTHER_CA),
        "someone else's": (peers.ca.issue(public, "lena@hospital.example"), "holder is another user",
                           cards.NOT_HOLDER),
        # alice of another domain the card CA serves: the directory gave alice's whole UPN
        "another domain's": (peers.ca.issue(public, "alice@partner.example"), "holder is another user",
                             cards.NOT_HOLDER)}[case]
    peers.card.put(cert)
    peers.ca.crl(peers.crl)
    check = peers.config().card_ca
    with pytest.raises(CardRefused, match=reason) as refused:
        cards.CardCheck(check, str(peers.crl), peers.card.module, upn=alice).check("alice", PIN)
    assert refused.value.why == why


def test_a_wrong_pin_counts_toward_the_lockout_and_step_up_asks_the_pin(env: VaultEnv, peers: Peers) -> None:
    env.vault.admin.set_policy(env.login("admin"), "lockout_failures", "3")
    for _ in range(3):  # (SoftHSM2 has no retry limit of its own: each answer is CKR_PIN_INCORRECT)
        with pytest.raises(DirectoryRefused, match="card's PIN is not correct"):
            env.vault.accounts.login("alice", PASSWORDS["alice"], "654321")
    assert [r.detail for r in logins(env, "alice")][-3:] == [{"method": "card", "why": cards.WRONG_PIN}] * 3
    with pytest.raises(AuthenticationFailed, match="Login failed"):  # locked: the right PIN is refused too
        env.vault.accounts.login("alice", PASSWORDS["alice"], PIN)
    alerts = [r for r in env.vault._gate._audit.records() if r.type == "security-alert"]
    assert alerts[-1].detail["alert"] == "account locked after repeated login failures"

    peers.card.put(peers.ca.issue(peers.card.public, "lena@hospital.example"))
    lena = env.vault.accounts.login("lena", PASSWORDS["lena"], PIN)[1]
    with pytest.raises(AuthenticationFailed, match="card's PIN is not correct"):  # (export, break-glass)
        env.vault.accounts.step_up(lena, "999999")
    assert logins(env, "lena")[-1].detail == {"step_up": True, "method": "card"}
    assert logins(env, "lena")[-1].outcome == 4
    env.vault.accounts.step_up(lena, PIN)
    assert logins(env, "lena")[-1].detail == {"step_up": True, "method": "card"}
    assert logins(env, "lena")[-1].outcome == 0


def test_a_card_that_locked_its_pin_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """CKR_PIN_LOCKED, which SoftHSM2 never answers, from a stand-in module (a real card's)."""
    class Locked:
        serial = b"card-7"

        def open(self, **_: object) -> None:
            raise pkcs11.PinLocked

    class Slot:
        def get_token(self) -> Locked:
            return Locked()

    class Module:
        def get_slots(self, token_present: bool) -> list[Slot]:
            return [Slot()]

    monkeypatch.setattr(cards, "_library", lambda module: Module())
    with pytest.raises(CardRefused, match="locked its PIN") as refused:
        cards.read_card("opensc", PIN)
    assert refused.value.why == cards.PIN_LOCKED


def test_a_card_pulled_out_is_no_longer_present(tmp_path: Path, peers: Peers,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    badge = Card.make(tmp_path / "badge")
    badge.put(peers.ca.issue(badge.public, "alice@hospital.example"))
    monkeypatch.setenv("SOFTHSM2_CONF", str(badge.conf))
    proof = cards.read_card(badge.module, PIN)
    assert proof.token_serial == badge.serial and badge.serial in cards.serials(badge.module)
    badge.pull_out()
    assert badge.serial not in cards.serials(badge.module)
    with pytest.raises(CardUnavailable, match="insert your card"):
        cards.read_card(badge.module, PIN)


def test_the_cli_sets_cards_and_a_directory_user_logs_in_with_card_and_pin(cli: Cli, peers: Peers) -> None:
    peers.card.put(peers.ca.issue(peers.card.public, "alice@hospital.example"))
    peers.ca.crl(peers.crl)
    made = make_env(cli.home)  # (in-process: the CLI is asked only what this test is about)
    made.vault.accounts.save_token(made.vault.accounts.login("admin", ADMIN_PASSWORD,
                                                             made.accounts["admin"].codes.next())[0])
    made.vault.close()
    done = cli.json("directory", "set", "--url", peers.server.ldaps_url, "--base", PLAIN, "--bind-dn",
                    f"cn=custodian,{PLAIN}", "--tls-ca", str(peers.site.ca.cert), "--second-factor", "card",
                    "--role", f"radiologist={group_dn('radiologists', PLAIN)}",
                    "--card-ca", str(peers.ca.pem), "--crl", str(peers.crl),
                    extra_env={"CUSTODIAN_DIRECTORY_SECRET": SERVICE_PASSWORD})
    assert done["second_factor"] == "card" and done["crl"] == str(peers.crl) and done["answers"]
    alice = {"CUSTODIAN_USER": "alice", "CUSTODIAN_PASSWORD": PASSWORDS["alice"], "CUSTODIAN_CARD_PIN": PIN,
             "CUSTODIAN_PKCS11_MODULE": peers.card.module, "SOFTHSM2_CONF": str(peers.card.conf)}
    assert cli.json("login", extra_env=alice)["source"] == "directory"


def test_the_second_factor_card_needs_the_card_ca_and_a_pem_one(peers: Peers) -> None:
    with pytest.raises(UsageError, match="--card-ca FILE"):
        peers.config(card_ca="")
    with pytest.raises(UsageError, match="PEM certificate"):
        peers.config(card_ca="not a certificate")
    with pytest.raises(UsageError, match="only it does"):
        peers.config(second_factor="totp")


def test_the_site_policy_names_the_card_ca_file_and_the_crl(peers: Peers) -> None:
    doc = {"url": "ldaps://dc.hospital.example", "base": PLAIN, "bind_dn": f"cn=custodian,{PLAIN}",
           "roles": [f"radiologist={group_dn('radiologists', PLAIN)}"], "second_factor": "card",
           "card_ca": str(peers.ca.pem), "crl": "http://pki.hospital.example/cards.crl"}
    config = DirectoryConfig.from_policy(doc)
    assert config.card_ca == peers.ca.pem.read_text() and config.crl == doc["crl"]
    assert DirectoryConfig.from_json(config.to_json()) == config
    with pytest.raises(UsageError, match=r"card CA /nowhere/missing\.pem\) cannot be read"):
        DirectoryConfig.from_policy({**doc, "card_ca": "/nowhere/missing.pem"})


@pytest.mark.parametrize("scope", [x509.DeltaCRLIndicator(1), x509.IssuingDistributionPoint(
    None, None, False, True, None, False, False)], ids=["delta CRL", "CA certificates only"])
def test_a_partial_crl_of_the_card_ca_refuses_every_card(peers: Peers, monkeypatch: pytest.MonkeyPatch,
                                                         scope: x509.ExtensionType) -> None:
    """A host on the network serving the CA's delta CRL (or one for its CA certificates) in place of
    the full one would let a revoked card in: fresh and well signed, it does not list it."""
    monkeypatch.setenv("SOFTHSM2_CONF", str(peers.card.conf))
    revoked = peers.ca.issue(peers.card.public, "alice@hospital.example")
    peers.card.put(revoked)
    peers.ca.crl(peers.crl, extension=scope)
    check = cards.CardCheck(peers.config().card_ca, str(peers.crl), peers.card.module)
    with pytest.raises(CardUnavailable, match="is a partial one") as unusable:
        check.check("alice", PIN)
    assert unusable.value.why == cards.CRL_UNUSABLE


@pytest.mark.parametrize("hostile", ["too large", "too slow"])
def test_a_crl_host_that_floods_or_drips_is_cut_off(peers: Peers, monkeypatch: pytest.MonkeyPatch,
                                                    hostile: str) -> None:
    """The CA's own CRL, sent larger than the limit or slower than the deadline, is not waited for."""
    body = peers.ca.crl(peers.crl).read_bytes()

    class Drip(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 100):
                self.wfile.write(body[start:start + 100])
                self.wfile.flush()
                time.sleep(0.1 if hostile == "too slow" else 0)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("SOFTHSM2_CONF", str(peers.card.conf))
    monkeypatch.setattr(cards, "CRL_LIMIT" if hostile == "too large" else "CRL_DEADLINE",
                        len(body) // 2 if hostile == "too large" else 0.15)
    peers.card.put(peers.ca.issue(peers.card.public, "alice@hospital.example"))
    check = cards.CardCheck(peers.config().card_ca, f"http://127.0.0.1:{server.server_port}/cards.crl",
                            peers.card.module)
    try:
        with pytest.raises(CardUnavailable, match="cannot be read"):
            check.check("alice", PIN)
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_that_is_no_card_of_ours_is_passed_over(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A token of anyone's making may carry objects that are no certificate: no card, not a crash."""
    badge = Card.make(tmp_path / "stranger")
    with _open(badge.conf) as session:
        session.create_object({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.TOKEN: True,
                               Attribute.CERTIFICATE_TYPE: CertificateType.X_509, Attribute.ID: KEY_ID,
                               Attribute.SUBJECT: b"\x30\x00", Attribute.VALUE: b"not a certificate"})
    monkeypatch.setenv("SOFTHSM2_CONF", str(badge.conf))
    with pytest.raises(CardUnavailable, match="insert your card"):
        cards.read_card(badge.module, PIN)


def test_the_cli_asks_the_card_pin_without_showing_it() -> None:
    """At a terminal the prompt for the code or the card's PIN does not echo it (on screen, in the
    scrollback, in a recorded session); a one-time code is hidden the same way."""
    leader, follower = os.openpty()
    ask = "from app.cli.credentials import code_or_pin; print(repr(code_or_pin('PIN: ')))"
    child = subprocess.Popen(
        [sys.executable, "-c", ask], stdin=follower, stdout=follower, stderr=follower,
        start_new_session=True, cwd=Path(__file__).parents[2],
        env={k: v for k, v in os.environ.items() if k not in ("CUSTODIAN_CARD_PIN", "CUSTODIAN_TOTP")})
    os.close(follower)
    shown = b""
    while b"PIN: " not in shown:
        shown += os.read(leader, 1024)
    os.write(leader, f"{PIN}\n".encode())
    assert child.wait(timeout=20) == 0
    with contextlib.suppress(OSError):  # (EIO once the child is gone and all is read)
        while part := os.read(leader, 1024):
            shown += part
    os.close(leader)
    assert shown.decode().count(PIN) == 1 and f"'{PIN}'" in shown.decode(), shown  # the answer, no echo


def test_a_token_with_alices_certificate_but_another_key_proves_nothing(
        tmp_path: Path, peers: Peers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate is public (the directory publishes it): copied onto a token of anyone's making
    beside a key of its own, it does not sign for alice."""
    stranger = Card.make(tmp_path / "stranger")
    stranger.put(peers.ca.issue(peers.card.public, "alice@hospital.example"))  # alice's key, not this one
    monkeypatch.setenv("SOFTHSM2_CONF", str(stranger.conf))
    with pytest.raises(CardRefused, match="key does not match") as refused:
        cards.CardCheck(peers.config().card_ca, str(peers.ca.crl(peers.crl)), stranger.module).check(
            "alice", PIN)
    assert refused.value.why == cards.NO_POSSESSION


def test_the_crl_of_another_site_ca_does_not_vouch_for_a_card(peers: Peers,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the card CA file holds two CAs (a root and the issuing CA), the CRL of the one that
    did not issue the card lists other serials: a revoked card would pass it."""
    monkeypatch.setenv("SOFTHSM2_CONF", str(peers.card.conf))
    peers.card.put(peers.ca.issue(peers.card.public, "alice@hospital.example"))
    both = peers.ca.pem.read_text() + peers.other_ca.pem.read_text()
    check = cards.CardCheck(both, str(peers.other_ca.crl(peers.crl)), peers.card.module)
    with pytest.raises(CardUnavailable, match="not signed by the site's card CA that issued") as unusable:
        check.check("alice", PIN)
    assert unusable.value.why == cards.CRL_UNUSABLE
