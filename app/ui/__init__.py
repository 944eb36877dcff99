"""The PySide6 desktop viewer.

It only displays what the vault hands out and forwards the reader's requests to it: no file or
database access here, and no Qt anywhere in the core. Import :func:`run_gui` from here.
"""

from app.ui.application import run_gui

__all__ = ["run_gui"]
