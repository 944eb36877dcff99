"""DICOM values the way readers write them: dates and person names."""

from __future__ import annotations


def person_name(value: str) -> str:
    """DICOM PN 'Family^Given^Middle^Prefix^Suffix' the way readers write it: 'Family, Given'."""
    family, given, middle, prefix, suffix = ([*value.split("=")[0].split("^"), "", "", "", ""])[:5]
    rest = " ".join(part for part in (prefix, given, middle, suffix) if part)
    return f"{family}, {rest}" if family and rest else family or rest


def iso_date(value: str) -> str:
    """DICOM DA 'YYYYMMDD' as an unambiguous 'YYYY-MM-DD'; anything else as stored."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value
