"""The package version (kept here so that low layers can read it without importing :mod:`medgen`)."""

__version__ = "0.1.0"
