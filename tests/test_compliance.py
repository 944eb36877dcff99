"""The compliance report: every HIPAA 164.312 safeguard a–e and checklist item names tests that
exist, and the report carries each test's real last result."""

from __future__ import annotations

import ast
from pathlib import Path

from app import compliance
from tests.conftest import Cli

ROOT = Path(__file__).resolve().parent.parent


def test_every_item_names_tests_that_exist() -> None:
    listed = compliance.items()
    assert {item.id[:10] for item in listed if item.id.startswith("164.312")} >= {
        "164.312(a)", "164.312(b)", "164.312(c)", "164.312(d)", "164.312(e)"}
    assert any(item.id.startswith("Checklist") for item in listed)
    for item in listed:
        assert item.tests, item.id
        for test in item.tests:
            path, name = test.split("::")
            tree = ast.parse((ROOT / path).read_text())
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"{item.id}: {test} does not exist"


def _junit(path: Path, cases: list[tuple[str, str, str]]) -> Path:
    body = []
    for classname, name, outcome in cases:
        inner = {"failed": "<failure message='x'/>", "skipped": "<skipped/>", "passed": ""}[outcome]
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>')
    path.write_text(f'<testsuites><testsuite name="pytest">{"".join(body)}</testsuite></testsuites>')
    return path


def test_results_decide_each_item(tmp_path: Path) -> None:
    junit = _junit(tmp_path / "r.xml", [
        ("tests.store.test_backup", "test_round_trip_into_a_new_home", "passed"),
        ("tests.store.test_backup", "test_cli_backup_and_restore", "passed"),
        ("tests.store.test_backup", "test_a_wrong_passphrase_or_changed_backup_restores_nothing[passphrase]",
         "passed"),
        ("tests.store.test_backup", "test_a_wrong_passphrase_or_changed_backup_restores_nothing[flipped]",
         "failed"),
    ])
    outcomes = compliance.results(junit)
    damaged = "tests/store/test_backup.py::test_a_wrong_passphrase_or_changed_backup_restores_nothing"
    assert outcomes[damaged] == compliance.FAILED
    states = {item.id: compliance.status(item, outcomes) for item in compliance.items()}
    assert states["Checklist: test backups"] == compliance.PASSED
    assert states["Checklist: encrypt media and backups"] == compliance.FAILED
    assert states["164.312(b)"] == compliance.NOT_RUN


def test_cli_writes_markdown_and_pdf_from_the_results(cli: Cli, tmp_path: Path) -> None:
    junit = _junit(tmp_path / "r.xml",
                   [("tests.store.test_backup", "test_round_trip_into_a_new_home", "passed")])
    out = tmp_path / "report.md"
    made = cli.json("compliance-report", "--results", str(junit), "--out", str(out))
    assert made["items"]["164.312(c)(1)"] == "not run"  # one of its tests ran, the others did not
    text = out.read_text()
    assert "## 164.312(a)(2)(iii) — Access control: automatic logoff" in text
    assert "`tests/store/test_backup.py::test_round_trip_into_a_new_home`: passed" in text
    pdf = tmp_path / "report.pdf"
    assert cli("compliance-report", "--results", str(junit), "--out", str(pdf)).returncode == 0
    assert pdf.read_bytes().startswith(b"%PDF")
    missing = cli("compliance-report", "--results", str(tmp_path / "none.xml"), "--out", str(out))
    assert missing.returncode == 2 and "could not be read" in missing.stderr
