"""The one rule for alias names, shared by every registry (prompts, models, MLflow's aliases).

- An alias starts with a letter and holds letters, digits, ``_``, ``.`` and ``-``
  (1-100 characters), like a git branch name without slashes.
- It is case-insensitive and case-preserving, as stage names already were:
  ``Champion`` and ``champion`` are one alias, stored with the spelling it was
  created with; setting ``CHAMPION`` later moves that alias rather than creating
  a second one, and any spelling reads it.
- An alias may not be a name the registry's selector already gives a meaning,
  in any case: ``latest`` (always the highest version; it cannot be moved)
  everywhere, and in the model registry the stage names ``None``, ``Staging``,
  ``Production`` and ``Archived``, which ``model@Production`` resolves to the
  stage: an alias of that name would hide the stage or be hidden by it, and
  ``model``, the name of the whole-model entries in a model's reflog. Prompts
  have no stages, so ``production`` is an ordinary prompt alias.
- A name that looks like a version (``1.2``, ``v3``) is refused: ``name@1.2``
  means that version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from keel.errors import InvalidInput

__all__ = ["RESERVED_ALIASES", "STAGE_NAMES", "check_alias", "looks_like_version", "match_alias"]

#: The model stages, in their canonical spelling (``keel.services.models`` moves versions between them).
STAGE_NAMES = ("None", "Staging", "Production", "Archived")
#: Alias names a registry with stages refuses in any case: the implicit ``latest`` and the stages.
RESERVED_ALIASES = frozenset({"latest", *(s.lower() for s in STAGE_NAMES)})

_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,99}")
_VERSION = re.compile(r"v?\d+(\.\d+){0,2}")


def looks_like_version(text: str) -> bool:
    """True for ``3``, ``v3``, ``1.2``, ``v1.2.3``: text a selector reads as a version."""
    return bool(_VERSION.fullmatch(text))


def check_alias(alias: object, stages: bool = False) -> str:
    """Return ``alias`` if it is a valid alias name (the rule in the module doc), else InvalidInput;
    ``stages``: the registry has stages (models), so their names are reserved too."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidInput(
            f"invalid alias {str(alias)[:120]!r}",
            "an alias starts with a letter and holds letters, digits, '_', '.' and '-': production, champion",
        )
    folded = alias.lower()
    if folded == "latest":
        raise InvalidInput("'latest' is implicit (the highest version) and cannot be set", "choose another alias")
    if stages and folded == "model":
        raise InvalidInput(
            "alias 'model' is reserved: the model's reflog uses it for the whole model", "choose another alias"
        )
    if stages and folded in RESERVED_ALIASES:
        stage = next(s for s in STAGE_NAMES if s.lower() == folded)
        raise InvalidInput(
            f"alias {alias!r} is the name of the stage {stage}, which name@{stage} already means",
            "choose another alias (prod, live, champion) or move the version to the stage instead",
        )
    if looks_like_version(alias):
        raise InvalidInput(f"alias {alias!r} looks like a version", "choose a name such as production")
    return alias


def match_alias(existing: Iterable[str], alias: str) -> str | None:
    """The stored spelling of ``alias`` among ``existing`` alias names: the exact name if
    present, else the one equal ignoring case, else None (a new alias)."""
    names = list(existing)
    if alias in names:
        return alias
    folded = alias.lower()
    return next((n for n in names if n.lower() == folded), None)
