"""The CLI as scripts use it: exit codes, JSON on stdout, plain errors on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import NotAuthenticated
from app.security.accounts import LOGIN_FAILED
from tests.conftest import Cli, CliUsers, Codes, password_for, write_study


def _no_traceback(result: object) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_full_cli_workflow(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    write_study(tmp_path / "in", slices=4, size=32)
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    assert cli_users.login("tech").returncode == 0
    assert cli.json("whoami") == {"user": "tech", "role": "technologist", "needs_enrolment": False,
                                "mode": "embedded"}

    result = cli("--json", "import", str(tmp_path / "in"))
    assert result.returncode == 5, result.stderr
    report = json.loads(result.stdout)
    assert report["imported"] == 4 and report["duplicates"] == 0
    assert report["rejected"] == [{"path": str(tmp_path / "in" / "notes.txt"), "reason": "not a DICOM file"}]

    again = cli("--json", "import", str(tmp_path / "in" / "IM00000.dcm"))
    assert again.returncode == 0 and json.loads(again.stdout)["duplicates"] == 1

    studies = cli.json("studies")
    assert len(studies) == 1
    assert set(studies[0]) >= {"study_uid", "patient_id", "patient_name", "study_date", "modalities",
                               "description", "series", "instances"}
    assert studies[0]["instances"] == 4 and studies[0]["modalities"] == ["CT"]
    assert cli.json("studies", "--patient", "nobody") == []

    verify = cli("--json", "verify")
    assert verify.returncode == 0
    assert json.loads(verify.stdout) == {"instances": 4, "ok": 4, "damaged": []}

    blob = max((p for p in (cli.home / "blobs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    damaged = cli("--json", "verify")
    assert damaged.returncode == 4
    assert len(json.loads(damaged.stdout)["damaged"]) == 1

    assert cli("logout").returncode == 0
    refused = cli("studies")
    assert refused.returncode == 3 and "Not logged in" in refused.stderr
    _no_traceback(refused)


def test_wrong_credentials_are_plain_refusals(cli_users: CliUsers) -> None:
    cli = cli_users.cli
    wrong_code = cli("login", extra_env={"CUSTODIAN_USER": "rad", "CUSTODIAN_TOTP": "000000",
                                         "CUSTODIAN_PASSWORD": password_for("rad")})
    unknown = cli("login", extra_env={"CUSTODIAN_USER": "nobody", "CUSTODIAN_TOTP": "123456",
                                      "CUSTODIAN_PASSWORD": "whatever-password"})
    for result in (wrong_code, unknown):
        assert result.returncode == 3
        assert result.stderr.strip() == f"custodian: {LOGIN_FAILED}"
        _no_traceback(result)
    wrong_pass = cli("whoami", extra_env={"CUSTODIAN_PASSPHRASE": "wrong"})
    assert wrong_pass.returncode == 3
    assert "passphrase is wrong" in wrong_pass.stderr
    _no_traceback(wrong_pass)


def test_permissions_exit_3(cli_users: CliUsers) -> None:
    cli = cli_users.cli
    assert cli_users.login("rad").returncode == 0
    refused = cli("user", "add", "eve", "--role", "admin", extra_env={"CUSTODIAN_PASSWORD": "x" * 14})
    assert refused.returncode == 3 and "may not manage users" in refused.stderr
    assert cli("--json", "audit", "verify").returncode == 3
    # The cache commands are in the role table like any other: a reader may pin, not evict.
    evict = cli("cache", "--evict")
    assert evict.returncode == 3 and "may not evict studies to the cache budget" in evict.stderr
    assert cli_users.login("tech").returncode == 0
    assert cli.json("cache", "--evict")["evicted"] == []  # no budget set: nothing to drop
    assert cli("cache", "--pin", "1.2.3.404").stderr.strip() == "custodian: This study is not in the cache."


def test_a_librarian_imports_outside_media_only(cli_users: CliUsers, tmp_path: Path) -> None:
    """The README's role table: the film library brings in outside media (surveyed, reconciled with
    the local patient), never plain `import`; the technologist may do both."""
    cli = cli_users.cli
    added = cli.json("user", "add", "lib", "--role", "librarian",
                     extra_env={"CUSTODIAN_PASSWORD": password_for("lib")})
    cli_users.codes["lib"], cli_users.passwords["lib"] = Codes.of(added["totp_uri"]), password_for("lib")
    write_study(tmp_path / "cd", slices=2, size=16)
    assert cli_users.login("lib").returncode == 0
    refused = cli("import", str(tmp_path / "cd"))
    assert refused.returncode == 3
    assert refused.stderr.strip() == "custodian: Not permitted: the librarian role may not import."
    assert cli.json("import-media", str(tmp_path / "cd"), "--outside-issuer", "St Elsewhere")["imported"] == 2
    write_study(tmp_path / "own", slices=2, size=16)
    assert cli_users.login("tech").returncode == 0
    assert cli.json("import", str(tmp_path / "own"))["imported"] == 2


def test_admin_commands(cli_users: CliUsers) -> None:
    cli = cli_users.cli
    assert cli_users.login("admin").returncode == 0
    users = cli.json("user", "list")
    assert {u["user"]: u["role"] for u in users} == {"admin": "admin", "rad": "radiologist",
                                                     "tech": "technologist"}
    short = cli("user", "add", "shorty", "--role", "radiologist", extra_env={"CUSTODIAN_PASSWORD": "short"})
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    bad_role = cli("user", "add", "x", "--role", "wizard", extra_env={"CUSTODIAN_PASSWORD": "x" * 14})
    assert bad_role.returncode == 2 and "Unknown role" in bad_role.stderr
    assert cli.json("user", "disable", "tech") == {"user": "tech", "disabled": True}
    assert cli.json("key", "rotate") == {"rewrapped": 1}  # the audit signing key
    chain = cli.json("audit", "verify")  # the session outlived the new index key
    assert chain["ok"] is True and chain["first_bad_seq"] is None and chain["events"] > 5
    assert cli_users.login("tech").returncode == 3  # disabled
    new_passphrase = {"CUSTODIAN_NEW_PASSPHRASE": "the new vault passphrase"}
    changed = cli.json("key", "passphrase", extra_env=new_passphrase)
    assert changed == {"passphrase": "changed"}
    assert "passphrase is wrong" in cli("whoami").stderr  # CUSTODIAN_PASSPHRASE still holds the old one
    assert cli("whoami", extra_env={"CUSTODIAN_PASSPHRASE": "the new vault passphrase"}).returncode == 0


def test_init_refuses_existing_and_usage_errors(cli: Cli) -> None:
    env = {"CUSTODIAN_PASSWORD": "first-admin-password"}
    first = cli("--json", "init", "--admin", "boss", "--key-storage", "passphrase", extra_env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["totp_uri"].startswith("otpauth://totp/") and len(doc["recovery_codes"]) == 10
    second = cli("init", "--admin", "other", extra_env=env)
    assert second.returncode == 1 and "already exists" in second.stderr
    assert cli("no-such-command").returncode == 2
    assert cli("studies").returncode == 3


def test_missing_vault_is_explained(cli: Cli) -> None:
    result = cli("studies")
    assert result.returncode == 1 and "custodian init" in result.stderr
    _no_traceback(result)


def test_gui_without_a_display_says_so(cli_users: CliUsers, tmp_path: Path) -> None:
    hidden = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    env = {k: v for k, v in cli_users.cli.env.items() if k not in hidden}
    cli = Cli(cli_users.cli.home, env)
    result = cli("gui")
    assert result.returncode == 1 and "No display" in result.stderr
    _no_traceback(result)


def test_gui_screenshot_of_a_logged_in_session(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    write_study(tmp_path / "in", slices=3, size=32)
    assert cli_users.login("tech").returncode == 0
    assert cli("import", str(tmp_path / "in")).returncode == 0
    assert cli_users.login("rad").returncode == 0
    study = cli.json("studies")[0]["study_uid"]
    shot = tmp_path / "shot.png"
    result = cli("gui", "--open", study, "--layout", "2x2", "--screenshot", str(shot))
    assert result.returncode == 0, result.stderr
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert cli("gui", "--open", "1.2.3.4", "--screenshot", str(shot)).returncode == 1


def test_identity_commands(cli_users: CliUsers, tmp_path: Path) -> None:
    cli = cli_users.cli
    assert cli_users.login("admin").returncode == 0
    assert cli.json("policy", "set", "inactivity_seconds", "300")["inactivity_seconds"] == 300
    too_long = cli("policy", "set", "inactivity_seconds", "3600")
    assert too_long.returncode == 2 and "from 30 to 600" in too_long.stderr
    added = cli.json("user", "add", "officer", "--role", "privacy-officer",
                     extra_env={"CUSTODIAN_PASSWORD": password_for("officer")})
    cli_users.codes["officer"] = Codes.of(added["totp_uri"])
    cli_users.passwords["officer"] = password_for("officer")

    write_study(tmp_path / "in", slices=2, size=16)
    assert cli_users.login("tech").returncode == 0
    assert cli("import", str(tmp_path / "in")).returncode == 0
    study = cli.json("studies")[0]["study_uid"]

    assert cli_users.login("officer").returncode == 0
    assert cli.json("patient", "restrict", "PID-0001") == {"patient_id": "PID-0001", "restricted": True}
    assert cli("studies").returncode == 3  # the privacy officer does not browse studies

    assert cli_users.login("rad").returncode == 0
    listed = cli.json("studies")[0]
    assert listed["restricted"] is True and listed["patient_name"] is None
    short = cli("break-glass", study, "--reason", "now", extra_env={"CUSTODIAN_TOTP": "000000"})
    assert short.returncode == 2 and "reason" in short.stderr
    granted = cli.json("break-glass", study, "--reason", "stroke alert, patient unconscious",
                       extra_env={"CUSTODIAN_TOTP": cli_users.codes["rad"].next()})
    assert granted["study_uid"] == study and granted["expires_at"]
    assert cli.json("studies")[0]["patient_name"] == "Testperson^Quentin"

    assert cli_users.login("officer").returncode == 0
    events = [r["type"] for r in cli.json("audit", "show", "--limit", "40")]
    assert "emergency-override" in events and "security-alert" in events
    weak = cli("passwd", extra_env={"CUSTODIAN_PASSWORD": password_for("officer"),
                                    "CUSTODIAN_NEW_PASSWORD": "password1234"})
    assert weak.returncode == 2 and "common or breached" in weak.stderr


def test_a_copied_home_or_another_machine_holds_no_session(cli_users: CliUsers, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from app.store import core
    from app.vault import Vault
    from tests.conftest import PASSPHRASE

    cli = cli_users.cli
    assert cli_users.login("rad").returncode == 0
    copy = tmp_path / "copied-home"
    shutil.copytree(cli.home, copy)
    copied = Cli(copy, cli.env)("whoami")
    assert copied.returncode == 3 and "Not logged in" in copied.stderr
    assert cli("whoami").returncode == 0  # the original goes on
    monkeypatch.setattr(core, "machine_id", lambda: "another machine")
    with Vault.open(cli.home, lambda: PASSPHRASE) as vault:
        assert vault.accounts.load_token() is None


def test_a_new_login_ends_the_previous_session(cli_users: CliUsers) -> None:
    from app.vault import Vault
    from tests.conftest import PASSPHRASE

    cli = cli_users.cli
    assert cli_users.login("rad").returncode == 0
    with Vault.open(cli.home, lambda: PASSPHRASE) as vault:
        first = vault.accounts.load_token()
    assert cli_users.login("tech").returncode == 0
    with Vault.open(cli.home, lambda: PASSPHRASE) as vault:
        with pytest.raises(NotAuthenticated):
            vault.accounts.resume(first)
        assert vault.accounts.whoami(vault.accounts.resume(vault.accounts.load_token())).user.name == "tech"
