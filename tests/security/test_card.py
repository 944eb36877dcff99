"""Smart cards as directory users' second factor against real peers: OpenLDAP slapd checks the
password and gives the role, a SoftHSM2 token is the card (its key made on it; the certificate a
test CA issued), the CRL a file. A refusal by the card holder's doing counts toward the lockout
like a wrong code; a card that cannot be checked (the CRL unreadable) refuses plainly, counted not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pkcs11
import pytest

from app.audit.log import AuditRecord
from app.errors import AuthenticationFailed, CustodianError, UsageError
from app.security import card as cards
from app.security.card import CardRefused, CardUnavailable
from app.security.directory import DirectoryConfig, parse_mapping
from app.security.roles import Role
from app.vault.card import REVOKED_ALERT
from app.vault.directory import DirectoryRefused
from tests.conftest import ADMIN_PASSWORD, Cli, VaultEnv, make_env
from tests.peers.cards import PIN, Card, CardAuthority
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


@pytest.mark.parametrize("case", ["expired", "not yet valid", "another CA", "someone else's"])
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
                           cards.NOT_HOLDER)}[case]
    peers.card.put(cert)
    peers.ca.crl(peers.crl)
    check = peers.config().card_ca
    with pytest.raises(CardRefused, match=reason) as refused:
        cards.CardCheck(check, str(peers.crl), peers.card.module).check("alice", PIN)
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
