"""The audit trail: one writer that every security-relevant action goes through."""
