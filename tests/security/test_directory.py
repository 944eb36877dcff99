"""Directory accounts against a real OpenLDAP slapd (tests/peers/slapd.py): LDAPS and StartTLS
verified against the site CA, groups mapped to roles, the AD disabled bit, a leaver losing a live
session at the next re-check, and offline logins with the cached verifier while it is down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from ldap3.core.exceptions import LDAPNoSuchObjectResult

from app.audit.log import AuditRecord
from app.errors import AuthenticationFailed, CustodianError, NotAuthenticated
from app.security import directory as directory_module
from app.security import managed_policy
from app.security.directory import Directory, Standing
from app.security.roles import Role
from app.security.sessions import Session
from app.vault import Vault
from app.vault.directory import UNTRUSTED_ALERT, DirectoryRefused
from tests.conftest import ADMIN_PASSWORD, PASSPHRASE, Cli, Codes, VaultEnv, make_env
from tests.peers.pki import Authority, Site
from tests.peers.ports import free_port
from tests.peers.slapd import AD, PLAIN, SERVICE_PASSWORD, Person, Slapd, group_dn, person_dn, running
from tests.peers.slapd import site_directory as config

GROUPS = ("radiologists", "technologists", "admins")
PEOPLE = [Person("alice", "alice directory pw 1", ("radiologists",)),
          Person("bob", "bob directory pw 22", ()),  # in no mapped group
          Person("dave", "dave directory pw 333", ("technologists",)),
          Person("erin", "erin directory pw 4444", ("admins", "radiologists")),
          # in groups in groups only (NESTED)
          Person("frank", "frank directory pw 5", ()), Person("gina", "gina directory pw 66", ()),
          Person("hank", "hank directory pw 777", ())]
PASSWORDS = {p.uid: p.password for p in PEOPLE}
NO_CODE = "000000"  # where the password or the directory refuses first (a real code would spend a step)
# Groups in groups, added in this order (group, members): frank is two levels below radiologists;
# gina's loop-a and loop-b hold each other and loop-b is in technologists; hank's rings hold only
# each other.
NESTED = (("night-shift", ["frank"]), ("reading-room", ["night-shift"]), ("radiologists", ["reading-room"]),
          ("loop-a", ["gina"]), ("loop-b", ["loop-a"]), ("loop-a", ["loop-b"]), ("technologists", ["loop-b"]),
          ("ring-1", ["hank"]), ("ring-2", ["ring-1"]), ("ring-1", ["ring-2"]))


def nest(server: Slapd, suffix: str) -> None:
    """The NESTED groups in ``suffix``'s tree, as a directory administrator makes them."""
    dn = {p.uid: person_dn(p.uid, suffix) for p in PEOPLE}
    with server.admin(suffix) as conn:
        for cn, members in NESTED:
            member = [dn.get(m) or group_dn(m, suffix) for m in members]
            try:
                conn.modify(group_dn(cn, suffix), {"member": [(ldap3.MODIFY_ADD, member)]})
            except LDAPNoSuchObjectResult:
                conn.add(group_dn(cn, suffix), ["groupOfNames"], {"member": member})


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Slapd, Site]]:
    with running(tmp_path_factory.mktemp("directory"), PEOPLE, GROUPS) as (server, site):
        nest(server, PLAIN)
        nest(server, AD)
        yield server, site



@pytest.fixture
def env(tmp_path: Path, slapd: tuple[Slapd, Site]) -> Iterator[VaultEnv]:
    e = make_env(tmp_path / "home")
    e.vault.admin.set_directory(e.login("admin"), config(*slapd), SERVICE_PASSWORD)
    yield e
    e.vault.close()


def enrol(vault: Vault, name: str) -> tuple[Session, Codes]:
    """A directory user's first login at this station: the directory checks the password, the
    station sets up their authenticator."""
    enrolment = vault.accounts.begin_first_enrolment(name, PASSWORDS[name])
    codes = Codes(enrolment.totp_secret)
    return vault.accounts.finish_first_enrolment(enrolment, codes.next())[1], codes


def records(env: VaultEnv, name: str, kind: str) -> list[AuditRecord]:
    return [r for r in reversed(env.vault._gate._audit.records()) if r.user == name and r.type == kind]


def test_a_directory_user_gets_the_role_of_their_first_mapped_group(env: VaultEnv) -> None:
    with pytest.raises(CustodianError, match="no authenticator of yours yet"):
        env.vault.accounts.login("alice", PASSWORDS["alice"], NO_CODE)
    session, codes = enrol(env.vault, "alice")
    assert session.user.role is Role.RADIOLOGIST and session.user.directory and not session.offline
    env.vault.reading.studies(session)
    env.vault.accounts.logout(session)
    session = env.vault.accounts.login("ALICE", PASSWORDS["alice"], codes.next())[1]
    assert session.user.name == "alice" and session.user.role is Role.RADIOLOGIST
    assert [r.detail.get("method") for r in records(env, "alice", "login")] == ["directory", "directory"]
    # erin is in admins and radiologists: the first mapping given (admin) decides
    assert enrol(env.vault, "erin")[0].user.role is Role.ADMIN
    # a local account keeps logging in as before, recorded as local
    assert env.login("admin", fresh=True).user.directory is False
    assert records(env, "admin", "login")[-1].detail["method"] == "local"


def test_a_wrong_directory_password_counts_toward_the_lockout(env: VaultEnv) -> None:
    enrol(env.vault, "alice")
    env.vault.admin.set_policy(env.login("admin"), "lockout_failures", "3")
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            env.vault.accounts.login("alice", "not alice's password", NO_CODE)
    whys = [r.detail.get("why") for r in records(env, "alice", "login")[-3:]]
    assert whys == ["wrong directory password"] * 3
    with pytest.raises(AuthenticationFailed):  # locked here, however right the password now is
        env.vault.accounts.login("alice", PASSWORDS["alice"], NO_CODE)


def test_a_user_in_no_mapped_group_gets_no_access(env: VaultEnv) -> None:
    with pytest.raises(DirectoryRefused, match="no group that gives access"):
        env.vault.accounts.begin_first_enrolment("bob", PASSWORDS["bob"])
    with pytest.raises(DirectoryRefused):
        env.vault.accounts.login("bob", PASSWORDS["bob"], NO_CODE)
    assert "bob" not in {u.name for u in env.vault.admin.list_users(env.login("admin"))}
    assert records(env, "bob", "login")[-1].detail["why"] == "in no group mapped to a role"


def test_active_directory_over_starttls_memberof_and_the_disabled_bit(env: VaultEnv, slapd) -> None:
    server, site = slapd
    check = env.vault.admin.set_directory(env.login("admin"), config(server, site, AD), SERVICE_PASSWORD)
    assert check.answers and check.url.startswith("ldap://")
    session = enrol(env.vault, "dave")[0]
    assert session.user.role is Role.TECHNOLOGIST
    server.change(person_dn("dave", AD), AD, userAccountControl=(ldap3.MODIFY_REPLACE, [514]))
    try:
        with pytest.raises(DirectoryRefused, match="disabled in the directory"):
            env.vault.accounts.login("dave", PASSWORDS["dave"], NO_CODE)
        with pytest.raises(NotAuthenticated, match="no longer gives access"):  # its live session went too
            env.vault.reading.studies(session)
    finally:
        server.change(person_dn("dave", AD), AD, userAccountControl=(ldap3.MODIFY_REPLACE, [512]))


def test_a_directory_the_site_ca_does_not_vouch_for_is_not_used(env: VaultEnv, slapd) -> None:
    server, site = slapd
    stranger = Authority(site.ca.folder.parent / "stranger", "Stranger CA")
    check = env.vault.admin.set_directory(env.login("admin"), config(server, site, ca=stranger.cert),
                                          SERVICE_PASSWORD)
    assert not check.answers and "certificate" in check.detail
    with pytest.raises(CustodianError, match="certificate the site CA does not vouch for"):
        env.vault.accounts.begin_first_enrolment("alice", PASSWORDS["alice"])
    alerts = [r for r in env.vault._gate._audit.records() if r.type == "security-alert"]
    assert alerts[0].detail["alert"] == UNTRUSTED_ALERT


def test_a_leaver_taken_out_of_the_group_loses_the_session_at_the_next_check(env: VaultEnv, slapd) -> None:
    server, _ = slapd
    env.vault.admin.set_policy(env.login("admin"), "directory_recheck_seconds", "1")
    session = enrol(env.vault, "dave")[0]
    env.vault.reading.studies(session)
    group = group_dn("technologists", PLAIN)
    server.change(group, PLAIN, member=(ldap3.MODIFY_DELETE, [person_dn("dave", PLAIN)]))
    try:
        env.vault.reading.studies(session)  # within the interval: the directory is not asked
        time.sleep(1.1)
        with pytest.raises(NotAuthenticated, match="no longer gives access"):
            env.vault.reading.studies(session)
        assert records(env, "dave", "user-security-attributes-changed")[-1].detail == {
            "directory": "in no group mapped to a role", "sessions_ended": True}
        with pytest.raises(DirectoryRefused):
            env.vault.accounts.login("dave", PASSWORDS["dave"], NO_CODE)
    finally:
        server.change(group, PLAIN, member=(ldap3.MODIFY_ADD, [person_dn("dave", PLAIN)]))


def test_offline_login_while_the_directory_is_down_and_the_check_on_its_return(env: VaultEnv, slapd) -> None:
    server, site = slapd
    admin = env.login("admin")
    env.vault.admin.set_policy(admin, "directory_recheck_seconds", "1")
    alice_codes, dave_codes = enrol(env.vault, "alice")[1], enrol(env.vault, "dave")[1]
    down = config(server, site, url=f"ldaps://localhost:{free_port()}")
    assert not env.vault.admin.set_directory(admin, down, SERVICE_PASSWORD).answers
    with pytest.raises(AuthenticationFailed):  # the cached verifier is still checked
        env.vault.accounts.login("alice", "not alice's password", NO_CODE)
    alice = env.vault.accounts.login("alice", PASSWORDS["alice"], alice_codes.next())[1]
    dave = env.vault.accounts.login("dave", PASSWORDS["dave"], dave_codes.next())[1]
    assert alice.offline and alice.user.role is Role.RADIOLOGIST
    assert records(env, "alice", "login")[-1].detail["offline"] is True
    with pytest.raises(CustodianError, match="does not answer"):  # never logged in here: no verifier
        env.vault.accounts.login("erin", PASSWORDS["erin"], NO_CODE)
    time.sleep(1.1)
    env.vault.reading.studies(alice)  # the re-check finds the directory still down: reading goes on
    group = group_dn("technologists", PLAIN)
    server.change(group, PLAIN, member=(ldap3.MODIFY_DELETE, [person_dn("dave", PLAIN)]))
    try:
        env.vault.admin.set_directory(admin, config(server, site), SERVICE_PASSWORD)  # it is back
        time.sleep(1.1)
        assert env.vault.accounts.whoami(alice).offline is False
        assert records(env, "alice", "login")[-1].detail == {"method": "directory", "back_online": True}
        with pytest.raises(NotAuthenticated, match="no longer gives access"):  # left while it was down
            env.vault.reading.studies(dave)
    finally:
        server.change(group, PLAIN, member=(ldap3.MODIFY_ADD, [person_dn("dave", PLAIN)]))


def test_no_offline_login_outside_the_window(env: VaultEnv, slapd) -> None:
    server, site = slapd
    admin = env.login("admin")
    enrol(env.vault, "alice")
    env.vault.admin.set_policy(admin, "offline_login_days", "0")
    env.vault.admin.set_directory(admin, config(server, site, url=f"ldaps://localhost:{free_port()}"),
                                  SERVICE_PASSWORD)
    with pytest.raises(CustodianError, match="allows no logins without the directory"):
        env.vault.accounts.login("alice", PASSWORDS["alice"], NO_CODE)


def test_the_cli_sets_the_directory_and_a_directory_user_logs_in(cli: Cli, slapd) -> None:
    server, site = slapd
    init = cli.json("init", "--admin", "admin", extra_env={"CUSTODIAN_PASSWORD": ADMIN_PASSWORD})
    admin = {"CUSTODIAN_USER": "admin", "CUSTODIAN_PASSWORD": ADMIN_PASSWORD,
             "CUSTODIAN_TOTP": Codes.of(init["totp_uri"]).next()}
    assert cli("login", extra_env=admin).returncode == 0
    options = ["directory", "set", "--url", server.ldaps_url, "--base", PLAIN, "--bind-dn",
               f"cn=custodian,{PLAIN}", "--tls-ca", str(site.ca.cert),
               "--role", f"radiologist={group_dn('radiologists', PLAIN)}"]
    secret = {"CUSTODIAN_DIRECTORY_SECRET": SERVICE_PASSWORD}
    refused = cli(*options, "--second-factor", "card", extra_env=secret)
    assert refused.returncode == 2 and "--card-ca FILE" in refused.stderr  # (a card needs the card CA)
    done = cli.json(*options, "--second-factor", "totp", extra_env=secret)
    assert done["answers"] is True and done["roles"] == [f"radiologist={group_dn('radiologists', PLAIN)}"]
    with Vault.open(cli.home, lambda: PASSPHRASE) as vault:
        codes = enrol(vault, "alice")[1]
    logged_in = cli.json("login", extra_env={"CUSTODIAN_USER": "alice", "CUSTODIAN_TOTP": codes.next(),
                                             "CUSTODIAN_PASSWORD": PASSWORDS["alice"]})
    assert logged_in["source"] == "directory" and logged_in["offline"] is False
    assert logged_in["user"] == "alice" and logged_in["role"] == "radiologist"


def test_the_signed_site_policy_sets_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   slapd) -> None:
    server, site = slapd
    key = Ed25519PrivateKey.generate()
    public, policy = tmp_path / "site-key.pub", tmp_path / "site-policy.json"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    policy.write_bytes(managed_policy.sign({"directory_recheck_seconds": 60, "directory": {
        "url": server.ldap_url, "base": AD, "bind_dn": f"cn=custodian,{AD}", "tls_ca": str(site.ca.cert),
        "user_filter": "(sAMAccountName={user})", "roles": [f"radiologist={group_dn('radiologists', AD)}"]}},
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())))
    monkeypatch.setenv("CUSTODIAN_SITE_POLICY", str(policy))
    monkeypatch.setenv("CUSTODIAN_SITE_KEY", str(public))
    env = make_env(tmp_path / "home")
    try:
        # this station's own setting gives the service account's secret; the site's directory is used
        mine = config(server, site, url=f"ldaps://localhost:{free_port()}")
        check = env.vault.admin.set_directory(env.login("admin"), mine, SERVICE_PASSWORD)
        assert check.answers and check.url == server.ldap_url
        session = enrol(env.vault, "alice")[0]
        assert session.user.directory and session.user.role is Role.RADIOLOGIST
        assert env.vault.policy.directory_recheck_seconds == 60
    finally:
        env.vault.close()


def test_a_name_the_directory_gave_to_another_entry_is_refused(env: VaultEnv, slapd) -> None:
    server, site = slapd
    enrol(env.vault, "alice")  # uid=alice in the plain tree; the AD-like tree has another alice
    env.vault.admin.set_directory(env.login("admin"), config(server, site, AD), SERVICE_PASSWORD)
    with pytest.raises(DirectoryRefused):
        env.vault.accounts.login("alice", PASSWORDS["alice"], NO_CODE)
    assert "another directory entry" in records(env, "alice", "login")[-1].detail["why"]


def test_a_user_moved_to_another_group_works_in_its_role_from_the_next_check(env: VaultEnv, slapd) -> None:
    server, _ = slapd
    env.vault.admin.set_policy(env.login("admin"), "directory_recheck_seconds", "1")
    session = enrol(env.vault, "alice")[0]
    alice = person_dn("alice", PLAIN)
    server.change(group_dn("technologists", PLAIN), PLAIN, member=(ldap3.MODIFY_ADD, [alice]))
    server.change(group_dn("radiologists", PLAIN), PLAIN, member=(ldap3.MODIFY_DELETE, [alice]))
    try:
        time.sleep(1.1)
        assert env.vault.accounts.whoami(session).user.role is Role.TECHNOLOGIST
        assert records(env, "alice", "user-security-attributes-changed")[-1].detail == {
            "directory_role": "technologist"}
    finally:
        server.change(group_dn("radiologists", PLAIN), PLAIN, member=(ldap3.MODIFY_ADD, [alice]))
        server.change(group_dn("technologists", PLAIN), PLAIN, member=(ldap3.MODIFY_DELETE, [alice]))


def test_groups_in_groups_give_their_role_and_a_cycle_ends(env: VaultEnv, slapd,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    server, site = slapd
    assert enrol(env.vault, "gina")[0].user.role is Role.TECHNOLOGIST  # through a cycle
    with pytest.raises(DirectoryRefused, match="no group that gives access"):  # a cycle and nothing else
        env.vault.accounts.begin_first_enrolment("hank", PASSWORDS["hank"])
    directories = {tree: Directory(config(server, site, tree), SERVICE_PASSWORD) for tree in (PLAIN, AD)}
    for directory in directories.values():  # groupOfNames read by member; AD-like memberOf, then member
        started = time.perf_counter()
        assert directory.authenticate("frank", PASSWORDS["frank"]).role is Role.RADIOLOGIST  # two levels up
        assert time.perf_counter() - started < 1.0  # (the login latency target)
        assert [directory.lookup(name).role for name in ("gina", "hank")] == [Role.TECHNOLOGIST, None]
    monkeypatch.setattr(directory_module, "NESTING", 1)  # radiologists is beyond the depth followed
    for suffix, directory in directories.items():
        upn = "frank@hospital.example" if suffix == AD else ""  # (AD's User Principal Name, for cards)
        assert directory.lookup("frank") == Standing(person_dn("frank", suffix), None, False, upn)
