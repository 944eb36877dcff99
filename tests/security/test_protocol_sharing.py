"""Hanging protocols in the vault: a reader keeps their own, the administrator the site's, each
change is in the trail; the site's travel as a file signed with the site's key (read in, or in
the signed site policy itself), and a file changed after signing is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from app.audit.events import EventType
from app.audit.report import AuditQuery
from app.cli import main
from app.errors import NotPermitted, UsageError
from app.imaging.protocols import Match, Protocol, Scope, SeriesRule
from app.security import managed_policy
from app.vault import Vault
from tests.conftest import PASSPHRASE, VaultEnv

CHEST = Protocol("Chest CT", Scope.SITE, Match(("CT",), "CHEST"), "1x2",
                 (SeriesRule(description="lung", preset="Lung"), SeriesRule(study="prior")))


@pytest.fixture
def site_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The site's key pair, its public key installed for this station; the private key (IT's)."""
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "site-key.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("CUSTODIAN_SITE_KEY", str(public))
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def test_kept_in_the_vault_shared_signed_and_set_by_the_site_policy(
        env: VaultEnv, site_key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One vault through the whole story (making a vault is slow)."""
    readers_keep_their_own_and_the_administrator_the_sites(env)
    the_sites_travel_signed_and_a_changed_file_is_refused(env, site_key)
    the_command_line_adds_a_readers_own_and_refuses_a_bad_one(env, tmp_path, monkeypatch, capsys)
    the_signed_site_policy_sets_protocols_nobody_here_changes(env, site_key, tmp_path, monkeypatch)


def readers_keep_their_own_and_the_administrator_the_sites(env: VaultEnv) -> None:
    vault, admin, rad = env.vault, env.login("admin"), env.login("rad")
    with pytest.raises(NotPermitted):
        vault.protocols.save_site(rad, CHEST)
    vault.protocols.save_site(admin, CHEST)
    mine = Protocol("Chest CT", Scope.USER, Match(("CT",), "CHEST"), "1x1")
    vault.protocols.save(rad, mine)  # the same name: the reader's own, beside the site's
    assert vault.protocols.protocols(rad) == [CHEST, mine]
    assert vault.protocols.protocols(env.login("tech")) == [CHEST]  # another reader's are not shown
    vault.protocols.remove(rad, "chest ct")
    with pytest.raises(UsageError, match="no user hanging protocol named 'chest ct'"):
        vault.protocols.remove(rad, "chest ct")
    records = vault._gate._audit.records(AuditQuery(event_type=EventType.POLICY_CHANGE))
    changes = [r.detail for r in sorted(records, key=lambda r: r.seq)]
    assert [(c["hanging_protocol"], c["scope"], c["change"]) for c in changes] == [
        ("Chest CT", "site", "saved"), ("Chest CT", "user", "saved"), ("chest ct", "user", "removed")]


def the_sites_travel_signed_and_a_changed_file_is_refused(env: VaultEnv, site_key: bytes) -> None:
    vault, admin = env.vault, env.login("admin")
    vault.protocols.save_site(admin, CHEST)
    settings = json.loads(vault.protocols.export_site(admin))  # what IT signs
    signed = managed_policy.sign(settings, site_key)
    vault.protocols.remove_site(admin, "Chest CT")
    assert vault.protocols.import_signed(admin, signed) == [CHEST]
    assert vault.protocols.protocols(admin) == [CHEST]
    doc = json.loads(signed)
    doc["policy"]["hanging_protocols"][0]["layout"] = "3x3"
    with pytest.raises(UsageError, match="changed after the site signed it"):
        vault.protocols.import_signed(admin, json.dumps(doc).encode())
    with pytest.raises(UsageError, match="not a signed site file"):
        vault.protocols.import_signed(admin, b'{"hanging_protocols": []}')


def the_command_line_adds_a_readers_own_and_refuses_a_bad_one(env: VaultEnv, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rad = env.accounts["rad"]
    token, _ = env.vault.accounts.login(rad.name, rad.password, rad.codes.next())
    env.vault.accounts.save_token(token)
    monkeypatch.setenv("CUSTODIAN_PASSPHRASE", PASSPHRASE)
    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"name": "Head MR", "match": {"modalities": ["MR"]}, "layout": "1x2"}))
    base = ["--home", str(env.home), "--json", "protocol", "add", str(given)]
    assert main(base) == 0
    (mine,) = [p for p in env.vault.protocols.protocols(env.login("rad")) if p.scope == Scope.USER]
    assert (mine.name, mine.match.modalities, mine.layout) == ("Head MR", ("MR",), "1x2")
    given.write_text(json.dumps({"name": "Head MR", "layout": "2x2", "viewports": [{}] * 5}))
    assert main(base) == 2
    assert "places 5 series but the 2x2 layout has 4" in capsys.readouterr().err
    env.vault.protocols.remove(env.login("rad"), "Head MR")


def the_signed_site_policy_sets_protocols_nobody_here_changes(env: VaultEnv, site_key: bytes, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "site-policy.json"
    shared = {"name": "Chest CT", "match": {"modalities": ["CT"]}, "layout": "2x2"}
    policy.write_bytes(managed_policy.sign({"hanging_protocols": [shared]}, site_key))
    monkeypatch.setenv("CUSTODIAN_SITE_POLICY", str(policy))
    env.vault.close()
    env.vault = vault = Vault.open(env.home, lambda: PASSPHRASE)
    env.sessions.clear()
    admin = env.login("admin")
    (managed,) = vault.protocols.protocols(env.login("rad"))  # over the station's of the same name
    assert managed.managed and managed.scope == Scope.SITE and managed.layout == "2x2"
    with pytest.raises(UsageError, match="set by the signed site policy"):
        vault.protocols.save_site(admin, CHEST)


def test_the_site_policy_refuses_a_bad_protocol_with_a_reason() -> None:
    with pytest.raises(UsageError, match="Site policy: Hanging protocol 'bad': layout must be one of"):
        managed_policy.split({"hanging_protocols": [{"name": "bad", "layout": "9x9"}]})
