"""Test support: the independent reference model of the contract (the e2e oracle)."""
