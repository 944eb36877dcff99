"""A command imports only what it uses (issue 24): `custodian --help` starts without the command
modules, the vault, DICOM, networking or Qt, and a command's options come without the other
commands' modules; `whoami` and `studies` as clients of the workstation service load neither the
store nor DICOM, NumPy, Qt or the key code. Checked in a fresh interpreter, from what it has imported
(not from timings); bench/startup.py measures the times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app import cli
from tests.conftest import REPO, VaultEnv, study_bytes
from tests.service.test_rpc import logged_in_client, served  # noqa: F401  (the service, in this process)

HEAVY = ("PySide6", "vtk", "pynetdicom", "numpy", "pydicom", "sqlcipher3")
GROUPS = sorted({module for module, _ in cli.COMMANDS.values()})


# What a client of the service has no use for: the store's database, hashing and keys.
CLIENT_HEAVY = (*HEAVY, "argon2", "keyring", "pkcs11", "cryptography", "pyzipper")


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
