"""The built-in demo: synthetic studies and a throw-away home with demo users."""
