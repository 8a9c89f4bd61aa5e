"""Use cases: the only layer that combines the metadata store and the objects.

- ``workspace`` finds or creates ``.keel/`` and opens a :class:`Store`;
- ``context``   captures where a run ran (git commit, host, versions);
- ``tracking``  projects, runs, logging batches, search, artifacts, tables;
- ``verify``    checks every stored object against its hash.

The SDK (in-process) and the server call the same functions.
"""
