"""Placeholder until the NT layer lands."""
