"""The compile flow."""
