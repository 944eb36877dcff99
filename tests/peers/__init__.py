"""Real peers the tests start on loopback ports: a certificate authority, rsyslog with TLS."""
