"""The README's role and duty tables say what roles.py decides: every action in one row, each tick
a permission and each dash a refusal (the security review found `import` and the cache commands
open to roles the table did not give them). test_identity's matrix then holds the code to roles.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.security.roles import DUTIES, Action, Duty, Role, permits
from app.vault.gate import CHANGES

README = Path(__file__).resolve().parents[2] / "README.md"
A = Action
# Each row of the README's role table, by its first cell, and the actions it stands for.
ROWS: dict[str, frozenset[Action]] = {
    "list studies": frozenset({A.LIST_STUDIES}),
    "view images": frozenset({A.VIEW_IMAGES}),
    "save measurements": frozenset({A.MEASURE}),
    "mark key images and send them to the PACS (`key-images`)": frozenset({A.KEY_IMAGES, A.SEND_KEY_IMAGES}),
    "break-glass (restricted patients)": frozenset({A.BREAK_GLASS}),
    "query / retrieve from the PACS": frozenset({A.QUERY, A.RETRIEVE}),
    "prefetch a patient's priors (on opening a study)": frozenset({A.PREFETCH}),
    "pin a study in the cache (`cache --pin`)": frozenset({A.PIN_STUDY}),
    "evict the cache to its budget now (`cache --evict`)": frozenset({A.EVICT_CACHE}),
    "import files, folders and DICOMDIRs (`import`)": frozenset({A.IMPORT}),
    "import outside media (`import-media`)": frozenset({A.IMPORT_MEDIA}),
    "reconcile two patient records": frozenset({A.RECONCILE_PATIENTS}),
    "send to the PACS": frozenset({A.SEND}),
    "export media": frozenset({A.EXPORT}),
    "copy or save a displayed image (a disclosure)": frozenset({A.COPY_VIEW}),
    "accounting of disclosures": frozenset({A.DISCLOSURES}),
    "business associate agreements": frozenset({A.MANAGE_AGREEMENTS}),
    "read the audit trail": frozenset({A.AUDIT_READ}),
    "verify the audit trail": frozenset({A.AUDIT_VERIFY}),
    "restrict a patient (VIP)": frozenset({A.RESTRICT_PATIENT}),
    "shred a study": frozenset({A.SHRED}),
    "verify the vault": frozenset({A.VERIFY}),
    "C-ECHO a PACS node, list nodes": frozenset({A.ECHO_NODE}),
    "users, PACS nodes, site policy, key rotation, backup": frozenset({
        A.MANAGE_USERS, A.MANAGE_NODES, A.SITE_POLICY, A.ROTATE_KEYS, A.BACKUP}),
}
COLUMNS = {"radiologist": Role.RADIOLOGIST, "technologist": Role.TECHNOLOGIST, "librarian": Role.LIBRARIAN,
           "privacy officer": Role.PRIVACY_OFFICER, "admin": Role.ADMIN}
DUTY_ROWS = {
    "receive from a sender (storage SCP, C-GET, C-MOVE)": Duty.RECEIVE,
    "send what waited in the outbox when the PACS is back": Duty.FLUSH_OUTBOX,
    "prefetch the priors of an arriving or opened study": Duty.PREFETCH,
    "keep the cache to its budget after priors arrive": Duty.EVICT_CACHE,
    "forward the audit trail to the repository": Duty.FORWARD_AUDIT,
    "check the audit trail's new records (hourly, in service mode)": Duty.CHECK_AUDIT,
}
HELD_TO = {"import": A.IMPORT, "send": A.SEND, "retrieve": A.RETRIEVE, "evict the cache": A.EVICT_CACHE,
           "read the audit trail": A.AUDIT_READ}


def table(first_header: str) -> tuple[list[str], list[list[str]]]:
    """The README table whose header row starts with ``first_header``: its headers and rows."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[0], rows[2:]  # (row 1 is the |---| line)


def test_every_action_has_one_row_and_every_row_its_actions() -> None:
    headers, rows = table("action")
    assert [COLUMNS[h] for h in headers[1:]] == list(Role)
    assert [row[0] for row in rows] == list(ROWS), "a row was added, removed or renamed in the README"
    named = [action for actions in ROWS.values() for action in actions]
    assert sorted(named) == sorted(Action), "an action is in no row of the README, or in two"


@pytest.mark.parametrize("label", list(ROWS))
def test_each_tick_is_a_permission_and_each_dash_a_refusal(label: str) -> None:
    headers, rows = table("action")
    (cells,) = [row[1:] for row in rows if row[0] == label]
    for header, cell in zip(headers[1:], cells, strict=True):
        role = COLUMNS[header]
        assert cell[0] in "✓–", f"{label}: '{cell}' is neither a tick nor a dash"
        for action in ROWS[label]:
            assert permits(role, action) == (cell[0] == "✓"), f"{label} for the {header}: README says {cell}"


def test_the_duties_table_holds_each_duty_to_its_action() -> None:
    headers, rows = table("duty (no session)")
    assert headers == ["duty (no session)", "held to", "in emergency mode"]
    assert sorted(DUTY_ROWS[row[0]] for row in rows) == sorted(Duty)
    for label, held_to, emergency in rows:
        duty = DUTY_ROWS[label]
        assert DUTIES[duty] == HELD_TO[held_to], label
        assert (emergency == "refused") == (DUTIES[duty] in CHANGES), label
