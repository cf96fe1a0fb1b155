"""Helpers shared by tests: generated Feast repositories and the conformance walk."""
