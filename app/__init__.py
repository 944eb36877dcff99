"""Custodian: a diagnostic DICOM workstation with an encrypted local cache.

The core (everything outside ``app.ui``) never imports Qt, so every capability can be
driven from the CLI and tested without a screen.
"""

__version__ = "0.1.0"
