"""RADIUS one-time codes for directory users against real peers: OpenLDAP slapd checks the password
and gives the role, Debian's FreeRADIUS (tests/peers/radius.py) accepts or rejects the code. A
rejected code counts toward the lockout like a wrong TOTP code; an MFA server that does not answer
(down, or not with this station's shared secret) refuses plainly, in the trail but not counted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from app.audit.log import AuditRecord
from app.errors import AuthenticationFailed, CustodianError, NotAuthenticated, UsageError
from app.security import radius
from app.security.directory import DirectoryConfig, parse_mapping
from app.security.radius import RadiusUnavailable, parse_server
from app.security.roles import Role
from app.vault.directory import CODE_REJECTED, MFA_SILENT, DirectoryRefused
from tests.conftest import ADMIN_PASSWORD, Cli, Codes, VaultEnv, make_env, study_bytes
from tests.peers.pki import Site
from tests.peers.ports import free_port
from tests.peers.radius import SECRET, FreeRadius, free_udp_port
from tests.peers.slapd import PLAIN, SERVICE_PASSWORD, Person, Slapd, group_dn, running, site_directory
from tests.security.test_step_up import export

PEOPLE = [Person("alice", "alice directory pw 1", ("radiologists",)),
          Person("lena", "lena directory pw 22", ("librarians",))]
PASSWORDS = {p.uid: p.password for p in PEOPLE}
CODES = {"alice": "314159", "lena": "271828"}  # what FreeRADIUS accepts as each one's one-time code
WRONG = "000000"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Slapd, Site, FreeRadius]]:
    folder = tmp_path_factory.mktemp("radius")
    mfa = FreeRadius(folder / "freeradius", CODES)
    mfa.start()
    try:
        with running(folder, PEOPLE, ("radiologists", "librarians")) as (server, site):
            yield server, site, mfa
    finally:
        mfa.stop()


def radius_config(peers: tuple[Slapd, Site, FreeRadius], address: str | None = None,
                  **changes: object) -> DirectoryConfig:
    server, site, mfa = peers
    librarians = parse_mapping([f"librarian={group_dn('librarians', PLAIN)}"])
    base = site_directory(server, site)
    return replace(base, **{"roles": base.roles + librarians, "second_factor": "radius",
                            "radius": address or mfa.address, **changes})


@pytest.fixture
def env(tmp_path: Path, peers: tuple[Slapd, Site, FreeRadius]) -> Iterator[VaultEnv]:
    e = make_env(tmp_path / "home")
    e.vault.admin.set_directory(e.login("admin"), radius_config(peers), SERVICE_PASSWORD, SECRET)
    yield e
    e.vault.close()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """An MFA server that does not answer is given up on sooner than at a site (0.6 s, not 3)."""
    monkeypatch.setattr(radius, "TIMEOUT", 0.3)


def records(env: VaultEnv, name: str) -> list[AuditRecord]:
    """``name``'s login events, oldest first."""
    return [r for r in reversed(env.vault._gate._audit.records()) if r.user == name and r.type == "login"]


def answered(mfa: FreeRadius) -> int:
    """Requests the MFA server has answered so far (its log's Login OK / Login incorrect lines)."""
    return mfa.log.read_text().count(": Login ")


def test_the_right_code_logs_in_and_a_wrong_one_counts_toward_the_lockout(env: VaultEnv, peers) -> None:
    mfa = peers[2]
    session = env.vault.accounts.login("alice", PASSWORDS["alice"], CODES["alice"])[1]
    assert session.user.directory and session.user.role is Role.RADIOLOGIST and not session.offline
    assert records(env, "alice")[-1].detail == {"method": "radius", "offline": False, "recovery_code": False}
    with pytest.raises(CustodianError, match="codes come from the site's MFA server"):  # no TOTP to set up
        env.vault.accounts.begin_first_enrolment("alice", PASSWORDS["alice"])
    env.vault.accounts.unlock(session, PASSWORDS["alice"], CODES["alice"])  # the lock screen asks it too
    # the MFA server is asked about the account's own spelling of the name, whatever was typed
    assert env.vault.accounts.login("ALICE", PASSWORDS["alice"], CODES["alice"])[1].user.name == "alice"

    env.vault.admin.set_policy(env.login("admin"), "lockout_failures", "3")
    for _ in range(3):
        with pytest.raises(DirectoryRefused, match="Login failed"):
            env.vault.accounts.login("alice", PASSWORDS["alice"], WRONG)
    failed = [r.detail for r in records(env, "alice") if r.outcome == 4]
    assert failed[-3:] == [{"method": "radius", "why": CODE_REJECTED}] * 3
    before = answered(mfa)
    with pytest.raises(AuthenticationFailed, match="Login failed"):  # locked: the right code is refused
        env.vault.accounts.login("alice", PASSWORDS["alice"], CODES["alice"])
    assert answered(mfa) == before  # and never reached the MFA server
    alerts = [r for r in env.vault._gate._audit.records() if r.type == "security-alert"]
    assert alerts[-1].detail["alert"] == "account locked after repeated login failures"


@pytest.mark.parametrize("fault", ["another shared secret", "server down"])
def test_an_mfa_server_that_does_not_answer_refuses_plainly_and_counts_nothing(
        env: VaultEnv, peers, quick: None, fault: str) -> None:
    admin = env.login("admin")
    env.vault.admin.set_policy(admin, "lockout_failures", "3")
    if fault == "server down":
        env.vault.admin.set_directory(admin, radius_config(peers, f"127.0.0.1:{free_udp_port()}"),
                                      SERVICE_PASSWORD, SECRET)
    else:
        env.vault.admin.set_directory(admin, radius_config(peers), SERVICE_PASSWORD, "not the secret")
    for _ in range(3):
        with pytest.raises(RadiusUnavailable, match="did not answer"):
            env.vault.accounts.login("alice", PASSWORDS["alice"], CODES["alice"])
    assert [r.detail for r in records(env, "alice")][-3:] == [{"method": "radius", "why": MFA_SILENT}] * 3
    env.vault.admin.set_directory(admin, radius_config(peers), SERVICE_PASSWORD, SECRET)
    assert env.vault.accounts.login("alice", PASSWORDS["alice"], CODES["alice"])[1].user.name == "alice"


def test_export_steps_up_with_a_radius_code(env: VaultEnv, tmp_path: Path) -> None:
    items = study_bytes(slices=2, size=16)
    env.add("tech", Role.TECHNOLOGIST)
    env.vault.intake.import_bytes(env.login("tech"), items)
    study_uid = str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(items[0][1])).StudyInstanceUID)
    env.vault.admin.set_policy(env.login("admin"), "lockout_failures", "3")
    lena = env.vault.accounts.login("lena", PASSWORDS["lena"], CODES["lena"])[1]
    assert lena.user.role is Role.LIBRARIAN
    assert export(env.vault, lena, study_uid, tmp_path / "one.zip", CODES["lena"]).instances == 2
    assert records(env, "lena")[-1].detail == {"step_up": True, "method": "radius"}
    for _ in range(2):
        with pytest.raises(AuthenticationFailed, match="one-time code is not correct"):
            export(env.vault, lena, study_uid, tmp_path / "two.zip", WRONG)
    with pytest.raises(NotAuthenticated, match="locked"):  # the third wrong code locks and ends the session
        export(env.vault, lena, study_uid, tmp_path / "two.zip", WRONG)
    assert not (tmp_path / "two.zip").exists()


def test_offline_login_with_a_radius_code_while_the_directory_is_down(env: VaultEnv, peers) -> None:
    env.vault.accounts.login("alice", PASSWORDS["alice"], CODES["alice"])  # a login here within the window
    down = radius_config(peers, url=f"ldaps://localhost:{free_port()}")
    env.vault.admin.set_directory(env.login("admin"), down, SERVICE_PASSWORD, SECRET)
    with pytest.raises(AuthenticationFailed):  # the cached verifier still checks the password
        env.vault.accounts.login("alice", "not alice's password", CODES["alice"])
    with pytest.raises(DirectoryRefused):
        env.vault.accounts.login("alice", PASSWORDS["alice"], WRONG)
    session = env.vault.accounts.login("alice", PASSWORDS["alice"], CODES["alice"])[1]
    assert session.offline and records(env, "alice")[-1].detail["method"] == "radius"


def test_the_cli_sets_radius_and_a_directory_user_logs_in_with_a_code(cli: Cli, peers) -> None:
    server, site, mfa = peers
    init = cli.json("init", "--admin", "admin", extra_env={"CUSTODIAN_PASSWORD": ADMIN_PASSWORD})
    assert cli("login", extra_env={"CUSTODIAN_USER": "admin", "CUSTODIAN_PASSWORD": ADMIN_PASSWORD,
                                   "CUSTODIAN_TOTP": Codes.of(init["totp_uri"]).next()}).returncode == 0
    options = ["directory", "set", "--url", server.ldaps_url, "--base", PLAIN, "--bind-dn",
               f"cn=custodian,{PLAIN}", "--tls-ca", str(site.ca.cert), "--second-factor", "radius",
               "--role", f"radiologist={group_dn('radiologists', PLAIN)}"]
    secrets = {"CUSTODIAN_DIRECTORY_SECRET": SERVICE_PASSWORD, "CUSTODIAN_RADIUS_SECRET": SECRET}
    refused = cli(*options, extra_env=secrets)
    assert refused.returncode == 2 and "--radius HOST:PORT" in refused.stderr
    done = cli.json(*options, "--radius", mfa.address, extra_env=secrets)
    assert done["answers"] is True and done["radius"] == mfa.address and done["second_factor"] == "radius"
    alice = {"CUSTODIAN_USER": "alice", "CUSTODIAN_PASSWORD": PASSWORDS["alice"],
             "CUSTODIAN_TOTP": CODES["alice"]}
    logged_in = cli.json("login", extra_env=alice)
    assert logged_in["source"] == "directory" and logged_in["user"] == "alice"


def test_the_mfa_server_is_host_and_port() -> None:
    assert parse_server("mfa.hospital.example") == ("mfa.hospital.example", 1812)
    assert parse_server("[::1]:11812") == ("::1", 11812)
    for wrong in ("", "mfa:0", "mfa:99999", "mfa:port", "user@mfa", "mfa/path"):
        with pytest.raises(UsageError, match="HOST\\[:PORT\\]"):
            parse_server(wrong)
