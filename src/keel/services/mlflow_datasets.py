"""MLflow's evaluation datasets (``mlflow.genai.datasets``) as keel dataset versions.

An MLflow evaluation dataset (``d-<32 hex>``) named ``NAME`` is the keel data path
``mlflow/datasets/NAME.jsonl`` (so names are unique, as keel paths are). Its records are
a JSON Lines object in keel's object store, and every change of the records (MLflow's
``merge_records`` / ``upsert``, deleting records) writes a new one and registers it as a
new version of the path (``keel data log mlflow/datasets/NAME.jsonl``): a dataset made
from MLflow is a ``keel data`` version, and ``keel.evaluate(data="dataset:<path>@<oid>")``
runs on it (recording exactly that version as its input).

Each line is one record, in the shape ``keel.evaluate`` reads (its fields are the
prompt's variables and the scorers' expectations) with MLflow's record kept whole::

    {"id": "dr-...", "question": "...", "answer": "...",
     "mlflow": {"dataset_record_id": "dr-...", "inputs": {"question": "..."},
                "expectations": {"answer": "..."}, "tags": {...}, ...}}

(``inputs`` then ``expectations`` at the top level; a key that is already there, ``id``
or ``mlflow`` is only in the ``mlflow`` object). Records are matched by their inputs, as
MLflow does: merging a record whose inputs are known updates it (expectations and tags
merged, outputs replaced).

The dataset's own fields (name, tags, experiments, schema, profile, digest, who and when)
are a row of ``mlflow_datasets``; its ``oid`` is the version its records are.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from keel.core.entities import now_ms
from keel.core.names import check_artifact_path
from keel.errors import AlreadyExists, InvalidInput, NotFound, TooLarge
from keel.integrations.mlflow_rest.filters import order_rows, row_filter
from keel.integrations.mlflow_rest.paging import page_of, page_size
from keel.meta import mlflow_datasets as dataset_rows
from keel.services.data_versions import register_with
from keel.services.workspace import Store

__all__ = ["DATASET_PREFIX", "MAX_DATASET_BYTES", "MlflowDatasets", "dataset_path"]

#: Where MLflow's evaluation datasets live among keel's data paths.
DATASET_PREFIX = "mlflow/datasets/"
#: Largest records object of one dataset (bytes of JSON Lines).
MAX_DATASET_BYTES = 64 << 20
_USER_TAG = "mlflow.user"
_ATTRIBUTES = ("name", "created_by", "last_updated_by", "created_time", "last_update_time", "dataset_id")
_DEFAULT_RECORDS_PAGE = 1000
_MAX_RECORDS_PAGE = 100_000
_MAX_SEARCH_PAGE = 1000
_RETRIES = 5  # concurrent changes of one dataset: each re-reads the records it merges into


def dataset_path(name: str) -> str:
    """The keel data path of the dataset named ``name``."""
    return check_artifact_path(f"{DATASET_PREFIX}{name}.jsonl")


def _not_found(dataset_id: str) -> NotFound:
    return NotFound(
        f"Evaluation dataset with id '{str(dataset_id)[:100]}' not found",
        "list them: mlflow.genai.datasets.search_datasets()",
    )


def _digest(name: str, at: int) -> str:
    """MLflow's digest of a dataset's state: 8 hex of sha256("name:last_update_time")."""
    return hashlib.sha256(f"{name}:{at}".encode()).hexdigest()[:8]


def _field_type(value: Any) -> str:
    """MLflow's type name of a field (for the dataset's schema)."""
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "object" if isinstance(value, dict) else "unknown"


def _schema(existing: str | None, records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """MLflow's dataset schema: the type of each input, output and expectation field first seen."""
    if not records and not existing:
        return None
    empty: dict[str, Any] = {"inputs": {}, "outputs": {}, "expectations": {}, "version": "1.0"}
    schema: dict[str, Any] = json.loads(existing) if existing else empty
    for record in records:
        for part in ("inputs", "expectations"):
            for key, value in (record.get(part) or {}).items():
                schema[part].setdefault(key, _field_type(value))
        outputs = record.get("outputs")
        if isinstance(outputs, dict):
            for key, value in outputs.items():
                schema["outputs"].setdefault(key, _field_type(value))
        elif outputs is not None and not schema["outputs"]:
            schema["outputs"] = _field_type(outputs)
    return schema


def _input_hash(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _line(record: Mapping[str, Any]) -> str:
    """One record as a line of the JSON Lines object (see the module docstring)."""
    row: dict[str, Any] = {"id": record["dataset_record_id"]}
    for part in ("inputs", "expectations"):
        for key, value in (record.get(part) or {}).items():
            if key not in row and key != "mlflow":
                row[key] = value
    row["mlflow"] = {k: v for k, v in record.items() if k != "dataset_id"}
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def _check_record(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise InvalidInput("Each record must be a dictionary", 'send [{"inputs": {...}, "expectations": {...}}]')
    for part in ("inputs", "expectations", "tags"):
        value = record.get(part)
        if value is not None and not isinstance(value, dict):
            raise InvalidInput(f"a record's {part} must be an object", f'send {{"{part}": {{...}}}}')
    source = record.get("source")
    if source is not None and not isinstance(source, dict):
        raise InvalidInput("a record's source must be an object", 'send {"source_type": "HUMAN", "source_data": {}}')
    return record


class MlflowDatasets:
    """MLflow evaluation datasets over keel's dataset versions and object store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    # -- rows ------------------------------------------------------------------------------
    def row(self, dataset_id: Any) -> dict[str, Any]:
        """The stored dataset (NotFound for an unknown id)."""
        if not isinstance(dataset_id, str):
            raise _not_found(str(dataset_id))
        with self.db.read() as conn:
            row = dataset_rows.row(conn, dataset_id)
        if row is None:
            raise _not_found(dataset_id)
        row["tags"] = json.loads(row["tags"] or "{}")
        row["experiment_ids"] = json.loads(row["experiment_ids"] or "[]")
        return row

    @staticmethod
    def to_json(row: Mapping[str, Any], with_experiments: bool = False) -> dict[str, Any]:
        """MLflow's ``Dataset`` (tags as a JSON text, as MLflow's proto carries them)."""
        out: dict[str, Any] = {"dataset_id": row["dataset_id"], "name": row["name"]}
        if row["tags"]:
            out["tags"] = json.dumps(row["tags"])
        for key in ("schema", "profile"):
            if row.get(key):
                out[key] = row[key]
        out.update(digest=row["digest"], created_time=row["created_at"], last_update_time=row["updated_at"])
        for key in ("created_by", "last_updated_by"):
            if row.get(key):
                out[key] = row[key]
        if with_experiments and row["experiment_ids"]:
            out["experiment_ids"] = list(row["experiment_ids"])
        return out

    def records(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The dataset's records in MLflow's shape (oldest first), read from its version."""
        if not row.get("oid"):
            return []
        text = self.store.objects.get_bytes(row["oid"]).decode("utf-8")
        out = []
        for line in text.splitlines():
            if line.strip():
                out.append({"dataset_id": row["dataset_id"], **json.loads(line)["mlflow"]})
        return out

    # -- datasets ----------------------------------------------------------------------------
    def create(self, name: Any, experiment_ids: Sequence[str], tags: Any) -> dict[str, Any]:
        """A new empty dataset (no records, no version yet); AlreadyExists for a name taken."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("Missing value for required parameter 'name'", "name the dataset")
        if len(name) > 255:
            raise InvalidInput("a dataset name is at most 255 characters", "use a shorter name")
        path = dataset_path(name)
        tag_values = _tags(tags)
        now = now_ms()
        user = tag_values.get(_USER_TAG)
        row = {
            "dataset_id": f"d-{uuid.uuid4().hex}",
            "name": name,
            "path": path,
            "oid": None,
            "digest": _digest(name, now),
            "tags": json.dumps(tag_values),
            "experiment_ids": json.dumps(list(dict.fromkeys(experiment_ids))),
            "created_by": user,
            "last_updated_by": user,
            "created_at": now,
            "updated_at": now,
        }
        with self.db.write() as conn:
            taken = dataset_rows.id_of_path(conn, path)
            if taken is not None:
                raise AlreadyExists(
                    f"an evaluation dataset named {name[:200]!r} exists already ({taken}): keel keeps "
                    f"a dataset's versions under one data path ({path})",
                    f"add records to it (dataset_id={taken}) or choose another name",
                )
            dataset_rows.insert(conn, {**row, "schema": None, "profile": None})
        return self.row(row["dataset_id"])

    def delete(self, dataset_id: str) -> None:
        """Forget the dataset (MLflow's delete; an unknown id is no error). Its keel versions stay."""
        with self.db.write() as conn:
            dataset_rows.delete(conn, dataset_id)

    def set_tags(self, dataset_id: str, tags: Any, remove: str | None = None) -> None:
        """Merge tags into the dataset's (or remove the tag ``remove``; missing ones are no error)."""
        values = _tags(tags)
        with self.db.write() as conn:
            found = dataset_rows.tags(conn, dataset_id)
            if found is None:
                if remove is not None:
                    return  # MLflow: deleting a tag of an unknown dataset is a no-op
                raise _not_found(dataset_id)
            merged = {**json.loads(found[0] or "{}"), **values}
            if remove is not None:
                merged.pop(remove, None)
            dataset_rows.set_tags(conn, dataset_id, json.dumps(merged))

    def set_experiments(self, dataset_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> dict[str, Any]:
        """Associate the dataset with more experiments, or fewer."""
        with self.db.write() as conn:
            found = dataset_rows.experiments(conn, dataset_id)
            if found is None:
                raise _not_found(dataset_id)
            listed = [e for e in json.loads(found[0] or "[]") if e not in set(remove)]
            listed += [e for e in add if e not in listed]
            dataset_rows.set_experiments(conn, dataset_id, json.dumps(listed))
        return self.row(dataset_id)

    def search(
        self,
        experiment_ids: Sequence[str] | None,
        filter_string: Any,
        max_results: Any,
        order_by: Any,
        page_token: Any,
    ) -> tuple[list[dict[str, Any]], str]:
        """MLflow's ``search_datasets``: by experiments, a filter (``name``, ``created_by``,
        ``last_updated_by``, ``created_time``, ``last_update_time``, ``tags.<key>``) and order."""
        keep = row_filter(filter_string if isinstance(filter_string, str) else None, _ATTRIBUTES)
        size = page_size(max_results if max_results not in (None, "", 0) else None, 1000, _MAX_SEARCH_PAGE)
        with self.db.read() as conn:
            found = dataset_rows.all_rows(conn)
        rows = []
        wanted = set(experiment_ids or ())
        for row in found:
            row["tags"] = json.loads(row["tags"] or "{}")
            row["experiment_ids"] = json.loads(row["experiment_ids"] or "[]")
            if wanted and not wanted.intersection(row["experiment_ids"]):
                continue
            plain = {**row, "created_time": row["created_at"], "last_update_time": row["updated_at"]}
            if keep(plain):
                rows.append(plain)
        clauses = order_by if isinstance(order_by, list) and order_by else ["created_time DESC"]
        ordered = order_rows(rows, clauses, _ATTRIBUTES, ["dataset_id DESC"])
        page, token = page_of(ordered, size, page_token if isinstance(page_token, str) else None, _MAX_SEARCH_PAGE)
        return [self.to_json(row) for row in page], token

    # -- records ------------------------------------------------------------------------------
    def records_page(self, row: Mapping[str, Any], max_results: Any, page_token: Any) -> tuple[list[Any], str]:
        """A page of the records (MLflow's GetDatasetRecords: 1,000 by default)."""
        size = page_size(
            max_results if max_results not in (None, "", 0) else None, _DEFAULT_RECORDS_PAGE, _MAX_RECORDS_PAGE
        )
        token = page_token if isinstance(page_token, str) else None
        return page_of(self.records(row), size, token, _MAX_RECORDS_PAGE)

    def upsert(self, dataset_id: str, new: Any) -> tuple[int, int]:
        """Merge records (matched by their inputs) and write the result as a new version of the
        dataset's path; ``(inserted, updated)``."""
        if not isinstance(new, list):
            raise InvalidInput("records must be a JSON list of records", 'send "[{\\"inputs\\": {...}}]"')
        checked = [_check_record(r) for r in new]
        for _attempt in range(_RETRIES):
            row = self.row(dataset_id)
            records = self.records(row)
            by_inputs = {_input_hash(r.get("inputs") or {}): r for r in records}
            now = now_ms()
            inserted = updated = 0
            updated_by = None
            for given in checked:
                inputs = given.get("inputs") or {}
                tags = given.get("tags") or {}
                if _USER_TAG in tags:
                    updated_by = tags[_USER_TAG]
                known = by_inputs.get(_input_hash(inputs))
                if known is not None:
                    _merge(known, given, now)
                    updated += 1
                    continue
                record = _new_record(dataset_id, given, now)
                records.append(record)
                by_inputs[_input_hash(inputs)] = record
                inserted += 1
            schema = _schema(row["schema"], checked)
            if self._write(row, records, now, updated_by, schema):
                return inserted, updated
        raise InvalidInput(
            f"evaluation dataset {dataset_id} kept changing while these records were merged",
            "merge the records again",
        )

    def delete_records(self, dataset_id: str, record_ids: Sequence[str]) -> int:
        """Remove records by id (a new version); how many were removed."""
        wanted = set(record_ids)
        for _attempt in range(_RETRIES):
            row = self.row(dataset_id)
            records = self.records(row)
            kept = [r for r in records if r["dataset_record_id"] not in wanted]
            removed = len(records) - len(kept)
            if not removed:
                return 0
            if self._write(row, kept, now_ms(), row["last_updated_by"], json.loads(row["schema"] or "null")):
                return removed
        raise InvalidInput(f"evaluation dataset {dataset_id} kept changing", "delete the records again")

    def _write(
        self,
        row: Mapping[str, Any],
        records: list[dict[str, Any]],
        now: int,
        updated_by: str | None,
        schema: dict[str, Any] | None,
    ) -> bool:
        """Store ``records`` as a new version of the dataset's path, if the dataset is still at the
        version they were read from (False: it changed meanwhile, merge again)."""
        records.sort(key=lambda r: (r["created_time"], r["dataset_record_id"]))
        data = "".join(_line(r) + "\n" for r in records).encode("utf-8")
        if len(data) > MAX_DATASET_BYTES:
            raise TooLarge(
                f"an evaluation dataset of {len(data):,} bytes, at most {MAX_DATASET_BYTES:,}",
                "split the records over several datasets",
            )
        oid = self.store.objects.put_bytes(data)
        register_with(self.store, [(row["path"], oid, "file", len(data), 1, "")])
        values: dict[str, Any] = {
            "oid": oid,
            "digest": oid[:8],
            "updated_at": now,
            "last_updated_by": updated_by,
            "profile": json.dumps({"num_records": len(records)}) if records else None,
        }
        if schema is not None:
            values["schema"] = json.dumps(schema)
        with self.db.write() as conn:
            return dataset_rows.set_records(conn, row["dataset_id"], row["oid"], values)


def _tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise InvalidInput("tags must be a JSON object", '{"team": "search"}')
    return {str(k): "" if v is None else str(v) for k, v in tags.items()}


def _new_record(dataset_id: str, given: Mapping[str, Any], now: int) -> dict[str, Any]:
    tags = dict(given.get("tags") or {})
    record: dict[str, Any] = {
        "dataset_record_id": f"dr-{uuid.uuid4().hex}",
        "dataset_id": dataset_id,
        "inputs": given.get("inputs") or {},
    }
    if given.get("expectations"):
        record["expectations"] = dict(given["expectations"])
    record["tags"] = tags
    source = given.get("source")
    if isinstance(source, dict):
        record["source"] = source
        if source.get("source_type"):
            record["source_type"] = source["source_type"]
        trace_id = (
            (source.get("source_data") or {}).get("trace_id") if isinstance(source.get("source_data"), dict) else None
        )
        if trace_id:
            record["source_id"] = trace_id
    record.update(created_time=now, last_update_time=now)
    if tags.get(_USER_TAG):
        record.update(created_by=tags[_USER_TAG], last_updated_by=tags[_USER_TAG])
    record["outputs"] = given.get("outputs") if given.get("outputs") is not None else {}
    return record


def _merge(record: dict[str, Any], given: Mapping[str, Any], now: int) -> None:
    """MLflow's merge of a record with known inputs: outputs replaced, expectations and tags
    merged, the time (and ``mlflow.user``) of the change recorded."""
    if "outputs" in given:
        record["outputs"] = given["outputs"] if given["outputs"] is not None else {}
    if given.get("expectations"):
        record["expectations"] = {**(record.get("expectations") or {}), **given["expectations"]}
    if given.get("tags"):
        record["tags"] = {**(record.get("tags") or {}), **given["tags"]}
        if _USER_TAG in given["tags"]:
            record["last_updated_by"] = given["tags"][_USER_TAG]
    record["last_update_time"] = now
