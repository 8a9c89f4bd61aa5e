"""Adapters to other ecosystems, and the stand-in model server keel ships for demos and tests."""
