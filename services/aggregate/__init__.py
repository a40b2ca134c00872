"""The aggregate service."""
