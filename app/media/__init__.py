"""Removable media: encrypted export, disclosures, de-identification and outside-media import."""
