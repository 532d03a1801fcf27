"""Observers of typed engine events: metrics and the audit log."""
