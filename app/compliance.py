"""``custodian compliance-report``: each HIPAA technical safeguard (164.312 a–e) and each
workstation item of the imaging-center checklist, with the feature that meets it, the tests that
show it and how those tests last ran.

The mapping is data (``resources/compliance.json``) so a reviewer reads and audits it without
reading code; the results come from pytest's JUnit XML (the suite writes ``test-results.xml``).
A test that did not run is said to have not run, never counted as passed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from app.errors import CustodianError, UsageError
from app.paths import resource_path

PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"


@dataclass(frozen=True)
class Item:
    id: str
    source: str
    requirement: str
    feature: str
    tests: tuple[str, ...]


def items(path: Path | None = None) -> list[Item]:
    doc = json.loads((path or resource_path("compliance.json")).read_text(encoding="utf-8"))
    return [Item(i["id"], i["source"], i["requirement"], i["feature"], tuple(i["tests"]))
            for i in doc["items"]]


def results(junit: Path) -> dict[str, str]:
    """Each test's outcome by node id (``tests/x.py::test_y``); parametrized cases combined: failed
    if any failed, passed if any passed and none failed, else skipped."""
    try:
        root = ElementTree.parse(junit).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise UsageError(f"The test results {junit} could not be read (a pytest --junitxml file).") from exc
    found: dict[str, set[str]] = {}
    for case in root.iter("testcase"):
        node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "").split("[")[0]
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = FAILED
        elif case.find("skipped") is not None:
            outcome = SKIPPED
        else:
            outcome = PASSED
        found.setdefault(node, set()).add(outcome)
    return {node: FAILED if FAILED in seen else PASSED if PASSED in seen else SKIPPED
            for node, seen in found.items()}


def status(item: Item, outcomes: Mapping[str, str]) -> str:
    """The item's state: failed if a test failed, passed only if every test passed."""
    seen = [outcomes.get(test, NOT_RUN) for test in item.tests]
    if FAILED in seen:
        return FAILED
    if all(s == PASSED for s in seen):
        return PASSED
    return NOT_RUN if NOT_RUN in seen else SKIPPED


def markdown(listed: list[Item], outcomes: Mapping[str, str], source: str) -> str:
    lines = ["# Custodian compliance report", "",
             f"Test results: {source}. An item passes only when every test that shows it passed.", ""]
    for item in listed:
        lines += [f"## {item.id} — {item.requirement} ({status(item, outcomes)})", "",
                  f"*{item.source}.* {item.feature}.", ""]
        lines += [f"- `{test}`: {outcomes.get(test, NOT_RUN)}" for test in item.tests]
        lines.append("")
    return "\n".join(lines)


def pdf(listed: list[Item], outcomes: Mapping[str, str], source: str) -> bytes:
    from app.documents import tabular_pdf

    rows = [[item.id, item.requirement, item.feature,
             "\n".join(f"{t.split('::')[-1]}: {outcomes.get(t, NOT_RUN)}" for t in item.tests),
             status(item, outcomes)] for item in listed]
    return tabular_pdf("Custodian compliance report", [f"Test results: {source}."],
                       ["Item", "Requirement", "Feature", "Tests (last result)", "Status"], rows,
                       [34, 45, 80, 90, 18], footer="No patient data.")


def report(junit: Path | None, out: Path) -> tuple[list[Item], dict[str, str]]:
    """Write the report (Markdown, or PDF for a .pdf name); the items and their states."""
    listed = items()
    outcomes = results(junit) if junit is not None else {}
    source = str(junit) if junit is not None else "none given (every test: not run)"
    if out.suffix.lower() == ".pdf":
        out.write_bytes(pdf(listed, outcomes, source))
    elif out.suffix.lower() in (".md", ".txt"):
        out.write_text(markdown(listed, outcomes, source), encoding="utf-8")
    else:
        raise CustodianError("The report is written as .md or .pdf; name the file accordingly.")
    return listed, {item.id: status(item, outcomes) for item in listed}
