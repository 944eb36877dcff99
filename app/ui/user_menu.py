"""The "User <name>" menu: lock, switch user, log out and the reader's own account settings.

It only holds the actions; the main window, which owns the session, connects them. "Users…" and
"Audit trail…" and "Disclosures…" are shown only to roles that may use them.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget

from app.security.accounts import User
from app.security.roles import Action, permits


class UserMenu(QMenu):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lock_action = QAction("&Lock", self, shortcut=QKeySequence("Ctrl+L"),
                                   toolTip="Hide all patient data until you unlock (Ctrl+L)")
        self.switch_action = QAction("&Switch user…", self,
                                     toolTip="Let someone else log in; your session ends")
        self.logout_action = QAction("Log &out", self, toolTip="End your session")
        self.password_action = QAction("Change &password…", self)
        self.reenrol_action = QAction("Set up &authenticator again…", self,
                                      toolTip="A new authenticator entry and new recovery codes, e.g. "
                                              "for a new phone; the old ones stop working")
        self.users_action = QAction("&Users…", self, toolTip="Add and disable user accounts")
        self.audit_action = QAction("&Audit trail…", self, shortcut=QKeySequence("Ctrl+Shift+A"),
                                    toolTip="Search the audit trail and export access reports (Ctrl+Shift+A)")
        self.disclosures_action = QAction("&Disclosures…", self, shortcut=QKeySequence("Ctrl+Shift+D"),
                                          toolTip="A patient's accounting of disclosures (Ctrl+Shift+D)")
        self.addAction(self.lock_action)
        self.addAction(self.switch_action)
        self.addAction(self.logout_action)
        self.addSeparator()
        self.addAction(self.password_action)
        self.addAction(self.reenrol_action)
        self.addSeparator()
        self.addAction(self.users_action)
        self.addAction(self.audit_action)
        self.addAction(self.disclosures_action)

    def set_user(self, user: User) -> None:
        self.setTitle(f"&User {user.name}")
        self.users_action.setVisible(permits(user.role, Action.MANAGE_USERS))
        self.audit_action.setVisible(permits(user.role, Action.AUDIT_READ))
        self.disclosures_action.setVisible(permits(user.role, Action.DISCLOSURES))
