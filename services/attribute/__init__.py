"""The attribute service."""
