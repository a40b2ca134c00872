"""The dedupe service."""
