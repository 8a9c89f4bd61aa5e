"""Semantic versions (``MAJOR.MINOR.PATCH``) for registered prompts.

A version is three non-negative integers compared in order, so
``SemVer(1, 10, 0) > SemVer(1, 9, 3)``. There are no pre-release or build
suffixes: a registry version is final once registered.

Example::

    >>> v = SemVer.parse("1.3")
    >>> str(v), str(v.bump("minor")), SemVer.parse("2.0.0").kind_of_change(v)
    ('1.3.0', '1.4.0', 'major')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import InvalidInput

__all__ = ["BUMPS", "SemVer"]

BUMPS = ("major", "minor", "patch")

# "v" prefix and a missing PATCH are accepted because prompt_config.yaml files say
# ``version: "1.3"``; leading zeros are not (SemVer forbids them: "1.02" is ambiguous).
_NUMBER = r"(0|[1-9][0-9]*)"
_PATTERN = re.compile(rf"v?{_NUMBER}\.{_NUMBER}(?:\.{_NUMBER})?")
_FORMAT_HINT = "a version is MAJOR.MINOR.PATCH, e.g. '1.3.0' (a 'v' prefix and 'MAJOR.MINOR' are accepted too)"


@dataclass(frozen=True, order=True)
class SemVer:
    """A semantic version; instances order like ``(major, minor, patch)`` tuples.

    Args:
        major: incompatible changes (a prompt's variables or response schema).
        minor: compatible changes of behaviour (model, parameters, few-shot examples).
        patch: wording only (template text).
    """

    major: int
    minor: int
    patch: int

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.patch):
            if type(part) is not int or part < 0:
                raise InvalidInput(f"invalid version part {part!r}: parts are integers >= 0", _FORMAT_HINT)

    @classmethod
    def parse(cls, text: str) -> SemVer:
        """Read ``"1.3.0"``, ``"v1.3.0"`` or ``"1.3"`` (= 1.3.0).

        Raises:
            InvalidInput: ``text`` is not in the MAJOR.MINOR.PATCH format.
        """
        if not isinstance(text, str):
            # YAML reads an unquoted `version: 1.10` as the float 1.1: refuse rather than guess.
            raise InvalidInput(
                f"version {text!r} is a {type(text).__name__}, not a string",
                _FORMAT_HINT + '; quote it in YAML files: version: "1.3.0"',
            )
        match = _PATTERN.fullmatch(text.strip())
        if match is None:
            raise InvalidInput(f"invalid version {text!r}: expected the format MAJOR.MINOR.PATCH", _FORMAT_HINT)
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def bump(self, kind: str) -> SemVer:
        """The next version of the given kind: ``1.3.2`` -> major ``2.0.0``, minor ``1.4.0``, patch ``1.3.3``.

        Raises:
            InvalidInput: ``kind`` is not one of :data:`BUMPS`.
        """
        if kind == "major":
            return SemVer(self.major + 1, 0, 0)
        if kind == "minor":
            return SemVer(self.major, self.minor + 1, 0)
        if kind == "patch":
            return SemVer(self.major, self.minor, self.patch + 1)
        raise InvalidInput(f"unknown bump {kind!r}", "bump is 'major', 'minor' or 'patch'")

    def kind_of_change(self, older: SemVer) -> str | None:
        """Which part went up from ``older`` to this version, or None if this one is not greater.

        ``SemVer(2, 0, 0).kind_of_change(SemVer(1, 5, 3)) == "major"``;
        ``SemVer(1, 4, 0).kind_of_change(SemVer(1, 3, 9)) == "minor"``.
        """
        if self <= older:
            return None
        if self.major != older.major:
            return "major"
        if self.minor != older.minor:
            return "minor"
        return "patch"
