"""Pixels, display transforms and series geometry; Qt-free."""
