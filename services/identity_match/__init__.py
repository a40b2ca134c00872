"""The identity_match service."""
