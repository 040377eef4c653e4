"""Frontend tests."""
