"""The packaged application: build.spec builds it, and the built program (not this checkout)
passes its self-test and renders the workstation with a study from its own encrypted vault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PySide6.QtGui import QImage

from app.demo.studies import Patient
from app.security import totp
from tests.conftest import ADMIN_PASSWORD, PASSPHRASE, Codes, write_study
from tests.test_service_unit import check_deb_service_files

USER_PASSWORD = "reading room pass phrase 1"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("build")
    run = subprocess.run([sys.executable, "-m", "PyInstaller", "build.spec", "--noconfirm", "--log-level",
                          "WARN", "--distpath", str(work / "dist"), "--workpath", str(work / "work")],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    program = work / "dist" / "custodian" / "custodian"
    assert program.is_file() and os.access(program, os.X_OK)
    return program


def _run(program: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODIAN_", "PYTHON"))}
    # The built program must not lean on this checkout or its venv.
    clean["PATH"] = "/usr/bin:/bin"
    return subprocess.run([str(program), "--home", str(home), *args], capture_output=True, text=True,
                          timeout=300, cwd=home.parent, stdin=subprocess.DEVNULL,
                          env={**clean, "CUSTODIAN_PASSPHRASE": PASSPHRASE, **env})


@pytest.mark.slow
def test_the_built_program_passes_selftest_and_shows_a_study(built: Path, tmp_path: Path) -> None:
    """selftest, a vault, an import and the workstation on screen, all by the built program; then
    the Debian package made from it."""
    home = tmp_path / "home"
    check = _run(built, home, "--json", "selftest", "--offline")
    assert check.returncode == 0, check.stdout + check.stderr
    results = {c["name"]: c["result"] for c in json.loads(check.stdout)["checks"]}
    assert all(results[name] == "pass" for name in ("AES-256-GCM (GCM spec test case 14)", "Argon2id "
               "(reference implementation vector)", "JPEG 2000 lossless", "HTJ2K", "Qt", "VTK"))

    init = _run(built, home, "--json", "init", "--admin", "admin", "--key-storage", "passphrase",
                CUSTODIAN_PASSWORD=ADMIN_PASSWORD)
    assert init.returncode == 0, init.stderr
    secrets = {"admin": _secret(init.stdout)}
    assert _log_in(built, home, "admin", ADMIN_PASSWORD, secrets["admin"])
    for name, role in (("tech", "technologist"), ("rad", "radiologist")):
        added = _run(built, home, "--json", "user", "add", name, "--role", role,
                     CUSTODIAN_PASSWORD=USER_PASSWORD)
        assert added.returncode == 0, added.stderr
        secrets[name] = _secret(added.stdout)
    check = _run(built, home, "selftest", "--offline")
    assert check.returncode == 0 and "index integrity — SQLCipher page authentication" in check.stdout

    # A technologist imports, a radiologist reads: the screen shows the study from the vault.
    paths = write_study(tmp_path / "in", Patient("BUILT-1", "Built^Bob"), slices=4, size=64)
    assert _log_in(built, home, "tech", USER_PASSWORD, secrets["tech"])
    imported = _run(built, home, "--json", "import", str(tmp_path / "in"))
    assert imported.returncode == 0 and json.loads(imported.stdout)["imported"] == 4, imported.stderr
    study_uid = pydicom.dcmread(paths[0]).StudyInstanceUID
    assert _log_in(built, home, "rad", USER_PASSWORD, secrets["rad"])
    out = tmp_path / "screen.png"
    shot = _run(built, home, "gui", "--open", study_uid, "--screenshot", str(out))
    assert shot.returncode == 0, shot.stderr
    image = QImage(str(out)).convertToFormat(QImage.Format.Format_RGB888)
    assert (image.width(), image.height()) == (1280, 800)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(800, image.bytesPerLine())
    viewport = rows[100:700, 700 * 3:1200 * 3]  # inside the single viewport, right of the study list
    assert len(np.unique(viewport)) >= 3, "air, water and bone of the phantom"

    # (one test, so the parallel runner builds once)
    _debian_package_installs_and_runs(built, tmp_path)


def _secret(added: str) -> str:
    return Codes.of(json.loads(added)["totp_uri"]).secret


def _log_in(program: Path, home: Path, name: str, password: str, secret: str) -> bool:
    done = _run(program, home, "login", CUSTODIAN_USER=name, CUSTODIAN_PASSWORD=password,
                CUSTODIAN_TOTP=totp.current_code(secret))
    return done.returncode == 0


def _debian_package_installs_and_runs(built: Path, tmp_path: Path) -> None:
    """The .deb holds the program, the command, the desktop entry, the policy folder and the
    service (unit, maintainer scripts, deployment notes), and the program it unpacks passes its
    self-test."""
    made = subprocess.run(["installer/linux/build-deb.sh", str(built.parent), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    deb = Path(made.stdout.strip())
    info = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Version", "Depends"],
                          capture_output=True, text=True, check=True).stdout
    assert "Package: custodian" in info and "Version: 0.1.0" in info and "libxcb-cursor0" in info
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    assert os.readlink(root / "usr/bin/custodian") == "/opt/custodian/custodian"
    assert (root / "etc/custodian/README.txt").is_file()
    assert (root / "usr/share/applications/custodian.desktop").read_text().count("Exec=custodian gui") == 1
    check_deb_service_files(deb, tmp_path / "service")
    check = _run(root / "opt/custodian/custodian", tmp_path / "home", "selftest", "--offline")
    assert check.returncode == 0 and "all passed" in check.stdout, check.stdout + check.stderr
