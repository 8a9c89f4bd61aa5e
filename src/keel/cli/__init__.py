"""The ``keel`` command line: a thin layer over :mod:`keel.sdk`."""
