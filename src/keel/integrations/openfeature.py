"""An OpenFeature provider over keel flags (needs ``openfeature-sdk``: ``pip install 'keel[openfeature]'``).

::

    from openfeature import api
    api.set_provider(keel.flags.openfeature_provider(env="production"))
    client = api.get_client()
    client.get_boolean_value("use_new_prompt_v2", False, EvaluationContext(targeting_key=uid))
    client.get_string_value("reranker", "off", EvaluationContext(uid, {"plan": "pro"}))

The evaluation context's ``targeting_key`` is the flag's unit (``user_id`` by
default) unless the attributes carry it; the other attributes are the keel
context. Reasons map to OpenFeature's: the kill switch is ``DISABLED``, a
matching rule ``TARGETING_MATCH``, a percentage bucket ``SPLIT``, no rule and
no rollout ``DEFAULT``. String values are the variant's payload when it is
text, else the variant's name; numbers and objects are payloads of that type
(``TYPE_MISMATCH`` otherwise). ``flag_metadata`` carries the flag-set version.

The provider wraps any object with keel's ``FlagClient`` interface (``flags``
and ``explain``), so this module depends on no other keel layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

__all__ = ["KeelProvider"]


class _Client(Protocol):
    @property
    def flags(self) -> Mapping[str, Any]: ...

    def explain(self, key: str, **context: Any) -> dict[str, Any]: ...


def _reason(text: str) -> Reason:
    if text == "killed":
        return Reason.DISABLED
    if text.startswith("rule"):
        return Reason.TARGETING_MATCH
    if text in ("rollout", "distribution"):
        return Reason.SPLIT
    return Reason.DEFAULT


class KeelProvider(AbstractProvider):
    """OpenFeature provider backed by a keel ``FlagClient``."""

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        """The provider's name."""
        return Metadata(name="keel")

    def _resolve(
        self, key: str, default: Any, context: EvaluationContext | None, kind: str
    ) -> FlagResolutionDetails[Any]:
        try:
            ctx: dict[str, Any] = dict(context.attributes) if context is not None else {}
            flag = self.client.flags.get(key)
            if flag is None:
                return FlagResolutionDetails(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}", Reason.ERROR)
            if context is not None and context.targeting_key is not None:
                ctx.setdefault(flag.unit, context.targeting_key)
            found = self.client.explain(key, **ctx)
            name, reason = found.get("variant"), str(found.get("reason", ""))
            meta = {"version": str(found.get("version", ""))}
            if name is None:
                return FlagResolutionDetails(default, ErrorCode.GENERAL, reason, Reason.ERROR, flag_metadata=meta)
            payload = found.get("value")
            value, ok = _typed(kind, bool(found.get("enabled")), name, payload)
            if not ok:
                return FlagResolutionDetails(
                    default,
                    ErrorCode.TYPE_MISMATCH,
                    f"flag {key!r} variant {name!r} is not a {kind}",
                    Reason.ERROR,
                    name,
                    meta,
                )
            return FlagResolutionDetails(value, None, None, _reason(reason), name, meta)
        except Exception as exc:  # a provider never raises into the app
            return FlagResolutionDetails(default, ErrorCode.GENERAL, str(exc), Reason.ERROR)

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        """A boolean: whether the flag is on for the context."""
        return self._resolve(flag_key, default_value, evaluation_context, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        """A string: the text payload, else the variant name."""
        return self._resolve(flag_key, default_value, evaluation_context, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        """An integer payload."""
        return self._resolve(flag_key, default_value, evaluation_context, "integer")

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        """A float payload."""
        return self._resolve(flag_key, default_value, evaluation_context, "float")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        """A mapping or list payload."""
        return self._resolve(flag_key, default_value, evaluation_context, "object")


def _typed(kind: str, enabled: bool, name: str, payload: Any) -> tuple[Any, bool]:
    if kind == "boolean":
        return enabled, True
    if kind == "string":
        if isinstance(payload, str):
            return payload, True
        return name, payload is None or isinstance(payload, bool)
    if kind == "integer":
        return payload, isinstance(payload, int) and not isinstance(payload, bool)
    if kind == "float":
        ok = isinstance(payload, (int, float)) and not isinstance(payload, bool)
        return (float(payload) if ok else payload), ok
    return payload, isinstance(payload, (Mapping, list))
