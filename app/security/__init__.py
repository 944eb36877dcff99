"""Keys, accounts, roles and sessions."""
