"""Where the login code comes from, said on the login screen: where the site's MFA server checks
directory users' one-time codes over RADIUS, the code is not the station's authenticator app's, and
a reader who looks for it there is stuck. (Local accounts keep their authenticator app.)"""

from __future__ import annotations

from PySide6.QtWidgets import QLineEdit

from app.errors import CustodianError
from app.ui.forms import FormDialog
from app.vault import Vault

RADIUS_CODE = "Code from your hospital's authenticator (RADIUS)"
RADIUS_INTRO = ("Log in with your password and the code from your hospital's authenticator (RADIUS). "
                "A local account uses the code from its authenticator app.")
RADIUS_UNLOCK = "Enter your password and the code from your hospital's authenticator (RADIUS) to continue."


def radius_site(vault: Vault) -> bool:
    """Whether directory users' codes come from the site's MFA server (a service that cannot tell
    yet: no, and the login or unlock says why)."""
    try:
        return vault.accounts.second_factor() == "radius"
    except CustodianError:
        return False


def say_where_codes_come_from(dialog: FormDialog, code: QLineEdit, vault: Vault) -> None:
    """Word ``dialog``'s intro and ``code`` field for the site's second factor (only RADIUS changes
    what they say; a service that cannot tell yet leaves the usual words, and the login says why)."""
    if not radius_site(vault):
        return
    dialog.intro_label.setText(RADIUS_INTRO)
    code.setPlaceholderText(RADIUS_CODE)
    code.setToolTip(f"{RADIUS_CODE}; a local account: the code from its authenticator app, or a "
                    "recovery code")
    code.setMinimumWidth(code.fontMetrics().horizontalAdvance(RADIUS_CODE) + 24)  # all of it shows
