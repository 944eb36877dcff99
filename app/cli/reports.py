"""A study's reports: structured reports printed as text, PDF reports named by title and size."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from app.cli.credentials import current_session, open_vault
from app.cli.output import EXIT_OK, Output
from app.cli.parsing import Command


def cmd_report_show(args: argparse.Namespace, out: Output) -> int:
    with open_vault(args) as vault:
        reports = vault.reading.reports(current_session(vault), args.study_uid)
    out.emit([report.as_dict() for report in reports],
             lambda: "\n\n".join(report.text() for report in reports) if reports
             else "This study has no reports in the cache.")
    return EXIT_OK


def _report_parser(command: Command) -> None:
    report = command.group("report_command")
    p = report.add("show", cmd_report_show, "the study's reports: structured reports as text, PDF "
                   "reports by title (for the roles that view its images)")
    p.add_argument("study_uid", metavar="STUDY_UID")


PARSERS: dict[str, Callable[[Command], object]] = {"report": _report_parser}
