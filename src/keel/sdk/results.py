"""Search results: a list of runs that can also be a flat table or a DataFrame."""

from __future__ import annotations

from typing import Any

from keel.core.entities import RunRecord

__all__ = ["RunList"]


class RunList(list[RunRecord]):
    """Runs from a search, plus ``next_page_token`` for the following page."""

    def __init__(self, runs: list[RunRecord], next_page_token: str | None = None) -> None:
        super().__init__(runs)
        self.next_page_token = next_page_token

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per run: attributes, then ``params.*``, ``metrics.*``, ``tags.*``."""
        rows = []
        for run in self:
            row: dict[str, Any] = {
                "run_id": run.run_id,
                "project": run.project,
                "name": run.name,
                "status": run.status,
                "start_time": run.start_time,
                "end_time": run.end_time,
                "parent_id": run.parent_id,
            }
            row.update({f"params.{k}": v for k, v in run.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
            row.update({f"tags.{k}": v for k, v in run.tags.items()})
            rows.append(row)
        return rows

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per run (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            from keel.errors import InvalidInput

            raise InvalidInput("to_pandas() needs pandas", "pip install pandas") from exc
        return pd.DataFrame(self.to_rows())
