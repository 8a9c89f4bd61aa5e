"""The public Python API: the fluent ``keel.*`` functions, ``Client`` and ``Run``.

Everything here runs in-process over ``keel.services``; a future HTTP
transport serves the same calls from a keel server.
"""
