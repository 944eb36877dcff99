"""A command imports only what it uses (issue 24): `custodian --help` starts without the command
modules, the vault, DICOM, networking or Qt, and a command's options come without the other
commands' modules; `whoami` and `studies` as clients of the workstation service load neither the
store nor DICOM, NumPy, Qt or the key code, and in embedded mode (the vault opened in the process)
neither DICOM, NumPy, Qt, networking, media nor the keyring or token code of a vault under a
passphrase. Checked in a fresh interpreter, from what it has imported (not from timings);
bench/startup.py measures the times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import cli
from tests.conftest import PASSPHRASE, REPO, VaultEnv, study_bytes
from tests.service.test_rpc import logged_in_client, served  # noqa: F401  (the service, in this process)

HEAVY = ("PySide6", "vtk", "pynetdicom", "numpy", "pydicom", "sqlcipher3")
GROUPS = sorted({module for module, _ in cli.COMMANDS.values()})


# What a client of the service has no use for: the store's database, hashing and keys.
CLIENT_HEAVY = (*HEAVY, "argon2", "keyring", "pkcs11", "cryptography", "pyzipper")
# What opening a vault under a passphrase to answer `whoami` or list studies has no use for: images,
# networking, media and the other places a master key may be kept.
EMBEDDED_HEAVY = ("PySide6", "vtk", "pynetdicom", "numpy", "pydicom", "PIL", "highdicom", "pyzipper",
                  "pycdlib", "keyring", "pkcs11", "app.net.association", "app.imaging.pixels",
                  "app.media.outside")


def _fresh(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``code`` in a new interpreter; it prints one JSON document."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_help_imports_no_command_module_and_nothing_heavy() -> None:
    found = _fresh(f"""
import contextlib, io, json, sys
from app.cli import main
texts = []
for argv in (["--help"], ["--version"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
    texts.append(out.getvalue())
print(json.dumps({{"texts": texts, "heavy": [m for m in {HEAVY!r} if m in sys.modules],
                  "commands": sorted(m for m in sys.modules if m.rpartition(".")[2] in {GROUPS!r})}}))
""")
    help_text, version = found["texts"]  # type: ignore[misc]
    assert all(f"    {name} " in help_text or f"    {name}\n" in help_text for name in cli.COMMANDS)
    assert version.startswith("custodian ")
    assert found["heavy"] == [] and found["commands"] == []


def test_a_commands_options_come_without_the_other_commands_modules_or_qt() -> None:
    found = _fresh(f"""
import contextlib, io, json, sys
from app.cli import COMMANDS, build_parser
groups = {GROUPS!r}
loaded = lambda: {{m for m in groups if "app.cli." + m in sys.modules}}
others = {{}}
for name, (module, _) in COMMANDS.items():
    before = loaded()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        build_parser().parse_args([name, "--help"])
    others[name] = sorted(loaded() - before - {{module}})
print(json.dumps({{"others": others, "qt": [m for m in ("PySide6", "vtk") if m in sys.modules]}}))
""")
    assert found["others"] == {name: [] for name in cli.COMMANDS}
    assert found["qt"] == []


def test_whoami_and_studies_as_clients_of_the_service_load_only_what_they_use(
        served: Path, env: VaultEnv, tmp_path: Path) -> None:  # noqa: F811
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=1, size=16))
    client = logged_in_client(served, env, tmp_path)
    answers = {}
    for command in ("whoami", "studies"):
        found = _fresh(f"""
import contextlib, io, json, sys
from app.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["--json", {command!r}])
print(json.dumps({{"code": code, "answer": json.loads(out.getvalue()),
                  "heavy": [m for m in {CLIENT_HEAVY!r} if m in sys.modules]}}))
""", client)
        assert found["code"] == 0 and found["heavy"] == [], command
        answers[command] = found["answer"]
    assert answers["whoami"] == {"user": "rad", "role": "radiologist", "needs_enrolment": False,
                                 "mode": "service"}
    assert [study["instances"] for study in answers["studies"]] == [1]  # type: ignore[index]


def test_whoami_and_studies_in_embedded_mode_load_neither_images_networking_nor_media(
        env: VaultEnv) -> None:
    env.vault.intake.import_bytes(env.login("tech"), study_bytes(slices=1, size=16))
    rad = env.accounts["rad"]
    token, _ = env.vault.accounts.login(rad.name, rad.password, rad.codes.next())
    env.vault.accounts.save_token(token)
    answers = {}
    for command in ("whoami", "studies"):
        found = _fresh(f"""
import contextlib, io, json, sys
from app.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["--home", {str(env.home)!r}, "--json", {command!r}])
print(json.dumps({{"code": code, "answer": json.loads(out.getvalue()),
                  "heavy": [m for m in {EMBEDDED_HEAVY!r} if m in sys.modules]}}))
""", {**_without_custodian(), "CUSTODIAN_PASSPHRASE": PASSPHRASE})
        assert found["code"] == 0 and found["heavy"] == [], command
        answers[command] = found["answer"]
    assert answers["whoami"] == {"user": "rad", "role": "radiologist", "needs_enrolment": False,
                                 "mode": "embedded"}
    assert [study["instances"] for study in answers["studies"]] == [1]  # type: ignore[index]


def _without_custodian() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIAN_")}


QUERIES = [None, {}, {"patient_id": "PID-1", "patient_name": "Doe^J*", "study_date": "20260101-",
                     "modality": "CT", "accession": "ACC-17"},
           {"patient_name": "Müller^Zoë"}, {"patient_name": "山田^太郎=ヤマダ^タロウ"},
           {"patient_id": "a\\b", "accession": " odd"}, {"patient_id": "x\x00y"}]


@pytest.mark.parametrize("query", QUERIES)
def test_the_audit_query_identifier_is_what_pydicom_writes(query: object) -> None:
    """The study list's audit message carries its C-FIND identifier, encoded without pydicom so
    that listing studies does not load it; the bytes are those pydicom writes."""
    from pydicom import Dataset, config
    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from app.audit.dicom_xml import QUERY_KEYS, _clean, _identifier

    ds = Dataset()
    ds.SpecificCharacterSet, ds.QueryRetrieveLevel = "ISO_IR 192", "STUDY"
    for key, (keyword, vr) in QUERY_KEYS.items():
        if isinstance(query, dict) and query.get(key):
            ds.add(DataElement(keyword, vr, _clean(str(query[key])), validation_mode=config.IGNORE))
    written = DicomBytesIO()
    written.is_little_endian, written.is_implicit_VR = True, False
    write_dataset(written, ds)
    assert _identifier(query) == written.getvalue()


# What the login dialog of `custodian gui` has no use for (Qt it needs, of course).
NOT_BEFORE_LOGIN = (*(m for m in EMBEDDED_HEAVY if m != "PySide6"), "vtkmodules")


def test_the_login_window_shows_before_the_main_window_and_dicom_load(env: VaultEnv, tmp_path: Path) -> None:
    """`custodian gui`: the login dialog needs neither the main window, NumPy, pydicom, networking
    nor VTK; they are imported once it is on screen (while the reader types), not before."""
    timeline = tmp_path / "timeline.jsonl"
    found = _fresh(f"""
import json, sys, time
from pathlib import Path
from PySide6.QtWidgets import QApplication, QDialog
from app.ui import application
from app.ui.login_dialog import LoginDialog
from app.vault import Vault
WINDOW = ("app.ui.main_window", "app.net.scp")
seen = {{}}
def shown_then_cancelled(dialog):
    dialog.show()
    seen["shown"] = [m for m in {NOT_BEFORE_LOGIN!r} + WINDOW if m in sys.modules]
    deadline = time.monotonic() + 60
    while not all(m in sys.modules for m in WINDOW) and time.monotonic() < deadline:
        QApplication.processEvents()
    return QDialog.DialogCode.Rejected
LoginDialog.exec = shown_then_cancelled
importing = application._import_after_login
def marked_then_importing():
    seen["marked"] = Path({str(timeline)!r}).exists() and "gui.login" in Path({str(timeline)!r}).read_text()
    importing()
application._import_after_login = marked_then_importing
with Vault.open(Path({str(env.home)!r}), lambda: {PASSPHRASE!r}) as vault:
    code = application.run_gui(vault, None)
print(json.dumps({{"code": code, "shown": seen["shown"], "marked": seen["marked"],
                  "after": [m for m in WINDOW if m in sys.modules]}}))
""", {**_without_custodian(), "QT_QPA_PLATFORM": "offscreen", "CUSTODIAN_TRACE": str(timeline)})
    # (the dialog's first paint is marked before the imports begin: the trace times what is seen)
    assert found == {"code": 1, "shown": [], "marked": True, "after": ["app.ui.main_window", "app.net.scp"]}
