"""MLflow REST compatibility, the pure part: MLflow's search grammar and JSON entities,
translated to and from keel's (no I/O; the server and the services use it).

- :mod:`.filters`: MLflow ``filter_string`` / ``order_by`` for runs -> keel's filter AST,
  and the registry/experiment filters evaluated over plain rows.
- :mod:`.entities`: keel records -> MLflow JSON (runs, experiments, model versions).
- :mod:`.errors`: keel errors -> MLflow's ``{"error_code", "message"}`` and its status.
"""
