"""keel's team server: the REST API (FastAPI) over the service layer, with token auth.

Needs the ``server`` extra (``pip install 'keel[server]'``). Start it with
``python -m keel.server --store URL --objects URL``; see ``docs/server.md``.
"""

from __future__ import annotations

from keel.server.app import create_app

__all__ = ["create_app"]
