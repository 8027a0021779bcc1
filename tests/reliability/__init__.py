"""Reliability: hostile model replies, endpoint faults, crash recovery and bad inputs to the public API."""
