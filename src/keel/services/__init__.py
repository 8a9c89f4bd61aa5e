"""Use cases: the only layer that combines the metadata store and the objects.

- ``workspace`` finds or creates ``.keel/`` and opens a :class:`Store`;
- ``context``   captures where a run ran (git commit, host, versions);
- ``tracking``  projects, runs, logging batches, search, artifacts, tables;
- ``verify``    checks every stored object against its hash, and the database: its
                integrity and every immutable record's digest.

The SDK (in-process) and the server call the same functions.
"""
