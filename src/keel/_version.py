"""The installed keel version (single source for packaging and run context)."""

__version__ = "0.1.0"
