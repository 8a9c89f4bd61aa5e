"""Redaction: secrets never reach storage or output, and (opt-in) personal data in conversations.

One module serves every path that stores or prints what an application hands
over: config snapshots (``keel config show`` and what a run records), run params
and tags, the run context (``argv``), recorded LLM requests (headers included)
and conversation records. It is pure (no I/O); the services call it.

**By key name** (:func:`is_secret_key`): a key is secret when its last word (split at
``_``, ``-``, ``.`` and camelCase) is ``password``, ``passwd``, ``pwd``,
``passphrase``, ``secret(s)``, ``token``, ``apikey``, ``credential(s)``,
``authorization``, ``cookie(s)``, ``dsn``, ``webhook`` (or a one-word
``accesskey``/``secretkey``/``privatekey``/``accountkey``); or its last two words
are ``api key``, ``secret key``, ``private key``, ``access key``, ``auth key``,
``account key``, ``subscription key``, ``signing key``, ``encryption key``,
``master key``, ``connection string``, ``webhook url``; or it is a header-style
name ending in ``-auth`` (``X-Auth``). So ``api_key``, ``X-Api-Key``,
``Authorization``, ``Set-Cookie``, ``auth_token``, ``sentry_dsn`` are secret;
``max_tokens``, ``token_limit``, ``key``, ``monkey``, ``use_auth`` are not. More
names come from the workspace (``[redaction] keys`` in ``.keel/config.toml``,
registered with :func:`add_secret_keys`) or per call (``extra_keys``); a listed
name matches a key equal to it or ending in it (``session_key`` matches
``user_session_key``), whatever the case and separators.

**By value** (:func:`redact_value`), in one pass over a string:

- URLs: the password of the userinfo (``postgresql://app:***@db/prod``), a
  userinfo that is a key alone (a DSN: ``https://***@o0.ingest.sentry.io/0``),
  webhook URLs whose path is the secret (``https://hooks.slack.com/services/***``,
  Discord, Teams, Zapier, Telegram bot URLs, any ``/webhook(s)/`` or ``/hooks/``
  path with a generated segment), and query or fragment parameters named like a
  secret or ``token``/``key``/``sig``/``signature``/``X-Amz-Signature``... (value masked);
- ``Bearer <token>`` and ``Basic <credentials>``;
- ``name=value`` / ``name: value`` / ``"name": "value"`` where the name ends in
  ``password``, ``secret``, ``token``, ``api_key``, ``access_key``, ``auth``,
  ``authorization``, ``credential(s)``, ``dsn``... (libpq and ODBC DSNs,
  ``aws_secret_access_key = ...``, JSON, command lines);
- token shapes: OpenAI ``sk-...``/``sk-proj-...``, Anthropic ``sk-ant-...``,
  AWS access key ids ``AKIA...``/``ASIA...`` (and a 40-character secret key in
  the same string), GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``,
  GitLab ``glpat-``, Slack ``xox[abposr]-``/``xapp-``, Google ``AIza...``,
  Hugging Face ``hf_...``, Stripe ``sk_live_``..., JWTs ``eyJ...``.``...``.``...``,
  PEM private key blocks.

Masked parts become ``***`` (:data:`REDACTED`). Strings shorter than
:data:`MIN_LENGTH` cannot hold any of these and are returned at once; longer
ones pass a cheap pre-check before the full scan, so clean values cost well
under a microsecond. Every pattern runs in linear time (no nested quantifiers).
:func:`redact_mapping` walks nested mappings and lists (bounded: depth
:data:`MAX_DEPTH`, :data:`MAX_NODES` nodes; past either, values are masked),
masking every value under a secret-named key and scanning every other string.
It errs on the side of masking: ``password: hunter2`` in prose is masked too.

**Conversations**: :func:`redact_record_secrets` (always applied before a record
is stored) masks secrets in messages, metadata and the feedback comment. The
opt-in built-in redactor :func:`redact_record` / :func:`redact_text` also
replaces, in one pass over the text:

- e-mail addresses                        -> ``[EMAIL]``
- secrets (all of the above)              -> ``[API_KEY]``
- phone numbers (7-15 digits: ``+44 20 7946 0958``, ``(555) 123-4567``,
  ``555-123-4567``, ``+4915112345678``; dates and IP addresses are left alone)
                                          -> ``[PHONE]``

It errs on the side of redacting: a 10-digit number written with separators may
be taken for a phone number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MIN_LENGTH",
    "REDACTED",
    "add_secret_keys",
    "is_secret_key",
    "redact_argv",
    "redact_mapping",
    "redact_record",
    "redact_record_secrets",
    "redact_tag",
    "redact_text",
    "redact_value",
    "secret_keys",
]

REDACTED = "***"
#: The shortest string that can hold a secret this module finds (``pwd=abc``, ``a://b:c@d``).
MIN_LENGTH = 8
#: How deep :func:`redact_mapping` looks; anything deeper is masked.
MAX_DEPTH = 128
#: How many values :func:`redact_mapping` looks at in one call; the rest are masked.
MAX_NODES = 200_000

# -- key names ---------------------------------------------------------------------------------
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "apikey",
        "credential", "credentials", "authorization", "cookie", "cookies", "dsn", "webhook",
        "accesskey", "secretkey", "privatekey", "accountkey",
    }
)  # fmt: skip
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"), ("secret", "key"), ("private", "key"), ("access", "key"), ("auth", "key"),
        ("account", "key"), ("subscription", "key"), ("signing", "key"), ("encryption", "key"),
        ("master", "key"), ("connection", "string"), ("webhook", "url"),
    }
)  # fmt: skip
#: A last word ending so is a secret too: ``dbpassword``, ``clientsecret``, ``openaiapikey``.
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "apikey", "accesskey", "secretkey", "privatekey")
_key_cache: dict[str, tuple[bool, str]] = {}  # key -> (secret by the built-in rules, normalized name)
_answers: dict[Any, bool] = {}  # key -> is_secret_key(key), registered names included
_registered: frozenset[str] = frozenset()


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(key)]


def _builtin_secret(key: str, words: list[str]) -> bool:
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_WORDS or last.endswith(_SECRET_SUFFIXES):
        return True
    if len(words) >= 2 and (words[-2], last) in _SECRET_PAIRS:
        return True
    return last == "auth" and len(words) >= 2 and "-" in key  # X-Auth, Proxy-Auth: header style


def _key_facts(key: str) -> tuple[bool, str]:
    facts = _key_cache.get(key)
    if facts is None:
        words = _words(key)
        facts = (_builtin_secret(key, words), "_".join(words))
        if len(_key_cache) < 10_000:
            _key_cache[key] = facts
    return facts


def _listed(normalized: str, names: Iterable[str]) -> bool:
    for name in names:
        if normalized == name or normalized.endswith("_" + name):
            return True
    return False


def _normalize_names(names: Iterable[Any]) -> frozenset[str]:
    return frozenset(n for n in ("_".join(_words(str(name))) for name in names) if n)


def is_secret_key(key: Any, extra_keys: Iterable[str] = ()) -> bool:
    """True for a key named like a secret (see the module doc), or listed in ``extra_keys`` or
    registered with :func:`add_secret_keys`; False for ``max_tokens``, ``token_limit``, ``key``."""
    if not extra_keys:
        found = _answers.get(key)  # the hot path: a key seen before
        if found is not None:
            return found
    if type(key) is not str:
        key = str(key)
    builtin, normalized = _key_facts(key)
    found = builtin or bool(_registered and _listed(normalized, _registered))
    if len(_answers) < 10_000:
        _answers[key] = found
    if found:
        return True
    return bool(extra_keys) and _listed(normalized, _normalize_names(extra_keys))


def add_secret_keys(names: Iterable[Any]) -> None:
    """Treat keys named ``names`` (and keys ending in them) as secret in this process, on every
    path (a workspace's ``[redaction] keys``). Names are only ever added."""
    global _registered, _kv_words
    new = _normalize_names(names) - _registered
    if new:
        _registered = _registered | new
        _answers.clear()
        _known_clean.clear()  # a text clean before may hold a newly secret name=value
        words = {name.rpartition("_")[2] for name in _registered}
        _kv_words = _KV_WORDS + tuple(sorted(w for w in words if not any(k in w for k in _KV_WORDS)))


def secret_keys() -> frozenset[str]:
    """The names registered with :func:`add_secret_keys` (normalized: lower case, ``_``)."""
    return _registered


# -- values ----------------------------------------------------------------------------------------
# Every rule is anchored on a literal ("://", "sk-", "AKIA", "bearer", a secret word before
# '=' or ':'...) found with str.find, which runs in C; a small regex then runs only where an
# anchor is. (One regex alternation of all the rules costs ~150 ns per character in CPython's
# engine: 1.5 ms for a 10 kB message.)
_IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}
_URL_REST = re.compile(r"[^\s\"'<>\\`]*")
_PEM_HEAD = re.compile(r"-----BEGIN[A-Z ]{0,30}PRIVATE KEY-----")
_BASE64_LINES = re.compile(r"[A-Za-z0-9+/=\s]*")
_BEARER_REST = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]{8,}=*)")
_IDENT_TAIL = re.compile(r"[A-Za-z0-9_.\-]*")
# After a secret name: the separator (an optional closing quote, escaped in JSON inside JSON,
# then '=' or ':'), then the value: to the closing quote when it is quoted, else to a space or
# a delimiter. A Bearer/Basic value, a PEM block or an already masked value is not one.
_KV_SEP = re.compile(r"""\\?["']?[ \t]*[=:][ \t]*(\\?["']?)(?!(?i:bearer|basic)[ \t]|-----BEGIN|\*\*\*|\[API_KEY\])""")
_KV_VALUE = {
    "": re.compile(r"""[^\s"'&;,<>\\{}\[\]()]+"""),
    '"': re.compile(r"""(?:[^"\\\n]|\\.)+"""),
    "'": re.compile(r"""[^'\n]+"""),
    '\\"': re.compile(r"""(?:[^"\\\n]|\\[^"\n])+"""),
    "\\'": re.compile(r"""(?:[^'\\\n]|\\[^'\n])+"""),
}
_NOT_SECRET = frozenset({"null", "none", "true", "false", "nil", "undefined"})
#: Words one of which every secret name holds: where a ``name=value`` may start.
_KV_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "auth", "cookie", "dsn", "webhook", "string", "url")
_kv_words: tuple[str, ...] = _KV_WORDS

# Token shapes: (anchor, pattern, kind), each run only when its anchor is in the text, the
# anchors grouped by a character they all hold (one search rules out the group).
_DASH_TOKENS = (
    ("sk-", re.compile(r"sk-[A-Za-z0-9_-]{16,}"), "sk"),
    ("glpat-", re.compile(r"glpat-[A-Za-z0-9_-]{20,}"), ""),
    ("xox", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), ""),
    ("xapp-", re.compile(r"xapp-[A-Za-z0-9-]{10,}"), ""),
)
_UNDERSCORE_TOKENS = (
    ("gh", re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"), ""),
    ("github_pat_", re.compile(r"github_pat_[A-Za-z0-9_]{30,}"), ""),
    ("hf_", re.compile(r"hf_[A-Za-z0-9]{30,}"), ""),
    ("k_live_", re.compile(r"[rsp]k_live_[A-Za-z0-9]{16,}"), ""),
    ("k_test_", re.compile(r"[rsp]k_test_[A-Za-z0-9]{16,}"), ""),
    ("whsec_", re.compile(r"whsec_[A-Za-z0-9]{24,}"), ""),
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+")
_BASE64URL_RUN = re.compile(r"[A-Za-z0-9_-]*")
_GOOGLE = re.compile(r"AIza[0-9A-Za-z_-]{35}")
# A literal first character: the engine looks for it as fast as str.find does.
_AWS_ID = re.compile(r"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}(?![0-9A-Za-z])")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{20,}")
_TOKEN_ONLY = re.compile(r"(?:sk-|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|hf_|AKIA|ASIA)[A-Za-z0-9_-]{8,}")
#: How many URLs nested in one another (``?next=https://...``) are looked into; deeper is masked.
_MAX_URL_NESTING = 4

#: Query and fragment parameters whose value is a secret (besides secret-named ones).
_QUERY_NAMES = frozenset(
    {
        "key", "sig", "signature", "token", "auth", "pass", "apikey", "api-key", "access_token",
        "refresh_token", "id_token", "client_secret", "x-amz-signature", "x-amz-credential",
        "x-amz-security-token", "x-goog-signature", "x-goog-credential", "x-goog-security-token",
        "awsaccesskeyid", "sas", "code_verifier",
    }
)  # fmt: skip
_HOOK_SEGMENTS = frozenset({"webhook", "webhooks", "hook", "hooks", "webhookb2"})


def _has_digit(text: str) -> bool:
    # Ten substring searches run in C; a regex search for \d costs ~10x more on prose.
    return (
        "0" in text
        or "1" in text
        or "2" in text
        or "3" in text
        or "4" in text
        or "5" in text
        or "6" in text
        or "7" in text
        or "8" in text
        or "9" in text
    )


def _generated(text: str) -> bool:
    """Looks machine-made: 16+ characters with letters and digits, or a 20+ alphanumeric run
    in mixed case. Words, paths and host names are not."""
    if len(text) < 16:
        return False
    if _has_digit(text) and any(c.isalpha() for c in text):
        return True
    return len(text) >= 20 and not text.islower() and not text.isupper() and text.isalnum()


def _at_word_start(text: str, start: int) -> bool:
    return start == 0 or text[start - 1] not in _WORD_CHARS


def _lower(text: str) -> str:
    low = text.lower()
    # a few non-ASCII letters lower to two characters: keep the indices of the text
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


class _Scanner:
    """Finds the secrets in a string and masks them with ``mask`` (``***`` or ``[API_KEY]``).
    One instance serves every thread; its only state is a bounded memo of short clean strings."""

    def __init__(self, mask: str) -> None:
        self.mask = mask
        self._clean: dict[str, bool] = {}

    def scan_short(self, text: str) -> str:
        """:meth:`scan` for the keys and short values of mappings, which repeat (span attributes,
        metadata): a short string found clean is remembered as clean (a bounded memo; strings
        that held a secret are never kept)."""
        if text in self._clean:
            return text
        found = self.scan(text)
        if found is text and len(text) <= _MEMO_LENGTH and len(self._clean) < _MEMO_SIZE:
            self._clean[text] = True
        return found

    def scan(self, text: str, nesting: int = 0) -> str:
        if len(text) < MIN_LENGTH:
            return text
        spans: list[tuple[int, int, str]] = []  # (start, end, replacement)
        colon = ":" in text
        if colon and "://" in text and ("@" in text or "?" in text or "#" in text or "hook" in text or "bot" in text):
            # (what a URL rule masks needs one of these: a userinfo, a query or fragment, a webhook
            # or bot path; token shapes in a path are found by the rules below like anywhere else)
            whole = self._urls(text, spans, nesting)
            if whole is not None:
                return whole
        long = len(text) >= 14  # the shortest token shape: xoxb-0123456789
        if long:
            if "-----BEGIN" in text:
                self._pem(text, spans)
            self._tokens(text, spans)
        low = None
        if (" " in text or "\t" in text) and ("earer" in text or "asic" in text):  # Bearer, bearer, Basic
            low = _lower(text)
            self._bearer(text, low, spans)
        if "=" in text or (colon and text.count(":") > text.count("://")):
            self._kv(text, low if low is not None else _lower(text), spans)
        if not spans:
            return text
        return _apply(text, spans)

    # -- the rules --------------------------------------------------------------------------------
    def _tokens(self, text: str, spans: list[tuple[int, int, str]]) -> None:
        found: list[re.Match[str]] = []
        if "-" in text:
            for anchor, pattern, kind in _DASH_TOKENS:
                if anchor in text:
                    for m in pattern.finditer(text):
                        if kind == "sk":
                            body = m.group()[3:]
                            if not (_has_digit(body) or _ALNUM_RUN.search(body)):
                                continue  # "sk-learn-compatible-estimators" is prose
                        found.append(m)
        if "_" in text:
            for anchor, pattern, _kind in _UNDERSCORE_TOKENS:
                if anchor in text:
                    found.extend(pattern.finditer(text))
        if "eyJ" in text and "." in text:
            k = text.find("eyJ")
            while k >= 0:
                jwt = _JWT.match(text, k)
                if jwt is not None:
                    found.append(jwt)
                    k = text.find("eyJ", jwt.end())
                else:  # any later "eyJ" of this run fails the same way: skip the run
                    k = text.find("eyJ", max(_match_end(_BASE64URL_RUN, text, k), k + 3))
        if "AIza" in text:
            found.extend(_GOOGLE.finditer(text))
        aws = _AWS_ID.search(text) is not None
        if aws:
            found.extend(_AWS_ID.finditer(text))
        for m in found:
            if _at_word_start(text, m.start()):
                spans.append((m.start(), m.end(), self.mask))
        if aws:  # the 40-character secret access key that goes with an access key id
            for m in _AWS_SECRET.finditer(text):
                key = m.group()
                if _has_digit(key) and not key.islower() and not key.isupper():
                    spans.append((m.start(), m.end(), self.mask))

    def _pem(self, text: str, spans: list[tuple[int, int, str]]) -> None:
        """A PEM private key block, to its END line (or, without one, to the end of its base64)."""
        i = text.find("-----BEGIN")
        while i >= 0:
            head = _PEM_HEAD.match(text, i)
            if head is None:
                i = text.find("-----BEGIN", i + 10)
                continue
            j = text.find("-----END", head.end())
            if j >= 0 and text.find("-----BEGIN", head.end(), j) < 0:
                close = text.find("-----", j + 8)
                end = close + 5 if close >= 0 else len(text)
            else:
                end = _match_end(_BASE64_LINES, text, head.end())
            spans.append((i, end, self.mask))
            i = text.find("-----BEGIN", end)

    def _bearer(self, text: str, low: str, spans: list[tuple[int, int, str]]) -> None:
        for word in ("bearer", "basic"):
            k = low.find(word)
            while k >= 0:
                end = k + len(word)
                if _at_word_start(text, k):
                    m = _BEARER_REST.match(text, end)
                    if m is not None:
                        token = m.group(1)
                        if len(token) >= 20 or _has_digit(token) or any(c in "._~+/=-" for c in token):
                            spans.append((m.start(1), m.end(1), self.mask))
                k = low.find(word, end)

    def _kv(self, text: str, low: str, spans: list[tuple[int, int, str]]) -> None:
        """``name=value``, ``name: value``, ``"name": "value"`` where the name is secret
        (:func:`is_secret_key`: ``password``, ``AccountKey``, ``aws_secret_access_key``...)."""
        for word in _kv_words:
            k = low.find(word)
            while k >= 0:
                end = _match_end(_IDENT_TAIL, text, k)
                sep = _KV_SEP.match(text, end)
                if sep is not None:
                    value = _KV_VALUE[sep.group(1)].match(text, sep.end())
                    if value is not None and value.group().lower() not in _NOT_SECRET:
                        start = k
                        while start > 0 and k - start < 128 and text[start - 1] in _IDENT_CHARS:
                            start -= 1
                        if is_secret_key(text[start:end]):
                            spans.append((value.start(), value.end(), self.mask))
                k = low.find(word, max(end, k + 1))

    def _urls(self, text: str, spans: list[tuple[int, int, str]], nesting: int) -> str | None:
        """Spans for the URLs in ``text``; the redacted text if it is one URL and nothing else
        (everything in it has been looked at then)."""
        i = text.find("://")
        while i > 0:
            start = i
            while start > 0 and i - start < 32 and (text[start - 1].isalnum() or text[start - 1] in "+.-"):
                start -= 1
            end = _match_end(_URL_REST, text, i + 3)
            if start < i and text[start].isalpha():
                url = text[start:end]
                redacted = self._url(url, nesting)
                if start == 0 and end == len(text):
                    return redacted
                if redacted != url:
                    spans.append((start, end, redacted))
            i = text.find("://", max(end, i + 3))
        return None

    # -- URLs ------------------------------------------------------------------------------------
    def _url(self, url: str, nesting: int) -> str:
        if nesting >= _MAX_URL_NESTING:
            return self.mask
        start = url.index("://") + 3
        rest = url[start:]
        userinfo = ""
        at = _userinfo_end(rest)
        if at >= 0:
            userinfo, rest = rest[:at], rest[at:]  # rest starts with '@'
            user, colon, password = userinfo.partition(":")
            if colon and password:
                userinfo = (self.mask if _generated(user) else user) + ":" + self.mask
            elif _generated(user) or _TOKEN_ONLY.fullmatch(user):
                userinfo = self.mask
        cut = len(rest)
        for ch in "/?#":
            i = rest.find(ch)
            if 0 <= i < cut:
                cut = i
        host, tail = rest[:cut], rest[cut:]
        if len(tail) > 1:
            if "?" in tail or "#" in tail or "hook" in url or "bot" in tail:
                name = host.lstrip("@")
                tail = self._tail(name.rpartition(":")[0] or name, tail)
            # what the path and query hold: token shapes, a URL nested in a parameter
            tail = self.scan(tail, nesting + 1)
        if not userinfo:
            return url if tail is rest[cut:] else url[:start] + host + tail
        return url[:start] + userinfo + host + tail

    def _tail(self, host: str, tail: str) -> str:
        path, qmark, query = tail.partition("?")
        if qmark:
            query, hashmark, fragment = query.partition("#")
        else:
            path, hashmark, fragment = path.partition("#")
        path = self._path(host.lower(), path)
        if query:
            query = self._params(query)
        if fragment and "=" in fragment:
            fragment = self._params(fragment)
        return path + qmark + query + hashmark + fragment

    def _path(self, host: str, path: str) -> str:
        if len(path) < 2:
            return path
        parts = path.split("/")  # ['', 'services', 'T000', ...]
        if host == "hooks.slack.com" and len(parts) > 2:
            return "/".join([*parts[:2], self.mask])
        if host in ("discord.com", "discordapp.com", "canary.discord.com", "ptb.discord.com"):
            for i, part in enumerate(parts):
                if part == "webhooks" and i + 1 < len(parts):
                    return "/".join([*parts[: i + 1], self.mask])
        if host == "hooks.zapier.com" and len(parts) > 3:
            return "/".join([*parts[:3], self.mask])
        if host == "api.telegram.org" and len(parts) > 1 and parts[1].startswith("bot") and ":" in parts[1]:
            parts[1] = "bot" + self.mask
            return "/".join(parts)
        for i, part in enumerate(parts):
            if part.lower() in _HOOK_SEGMENTS and i + 1 < len(parts):
                rest = parts[i + 1 :]
                if host.endswith("webhook.office.com") or any(_generated(p) for p in rest):
                    return "/".join([*parts[: i + 1], self.mask])
        return path

    def _params(self, query: str) -> str:
        pairs = query.split("&")
        changed = False
        for i, pair in enumerate(pairs):
            name, eq, value = pair.partition("=")
            if eq and value and value != self.mask and _secret_param(name):
                pairs[i] = name + "=" + self.mask
                changed = True
        return "&".join(pairs) if changed else query


def _match_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (one that matches the empty string too) stops matching from ``pos``."""
    m = pattern.match(text, pos)
    return m.end() if m is not None else pos


def _could_hold_secret(text: str) -> bool:
    """False only when :meth:`_Scanner.scan` would find nothing in ``text``: the same gates,
    without the matching (a whole record's texts joined pass it at once)."""
    colon = ":" in text
    if colon and "://" in text and ("@" in text or "?" in text or "#" in text or "hook" in text or "bot" in text):
        return True
    if "-" in text and ("-----BEGIN" in text or any(anchor in text for anchor, _p, _k in _DASH_TOKENS)):
        return True
    if "_" in text and any(anchor in text for anchor, _p, _k in _UNDERSCORE_TOKENS):
        return True
    if ("eyJ" in text and "." in text) or "AIza" in text or _AWS_ID.search(text) is not None:
        return True
    if (" " in text or "\t" in text) and ("earer" in text or "asic" in text):
        return True
    if "=" in text or (colon and text.count(":") > text.count("://")):
        low = _lower(text)
        return any(word in low for word in _kv_words)
    return False


def _apply(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with the spans replaced; of overlapping spans the first (then the longest) wins."""
    spans.sort(key=lambda s: (s[0], -s[1]))
    out = []
    last = 0
    for start, end, replacement in spans:
        if start < last:
            continue
        out.append(text[last:start])
        out.append(replacement)
        last = end
    out.append(text[last:])
    return "".join(out)


def _userinfo_end(rest: str) -> int:
    """The index of the '@' ending the userinfo of a URL's ``rest`` (after ``://``), or -1.

    A password may hold '@' and '/' unescaped (``app:p@ss/w@db``): with a password the
    userinfo runs to the last '@' before any '?' or '#' (masking too much rather than too
    little); without one, to the last '@' reached without a '/'."""
    at = rest.find("@")
    if at <= 0:
        return -1
    userinfo = rest[:at]
    if "?" in userinfo or "#" in userinfo:
        return -1
    user, colon, password = userinfo.partition(":")
    if colon and "/" not in user and not password.split("/", 1)[0].isdigit():
        end = len(rest)
        for ch in "?#":
            i = rest.find(ch, at)
            if 0 <= i < end:
                end = i
        return rest.rfind("@", 0, end)
    if "/" in userinfo:
        return -1  # host:port/path/@name is a path, not credentials
    while True:
        nxt = rest.find("@", at + 1)
        if nxt < 0 or any(c in rest[at + 1 : nxt] for c in "/?#"):
            return at
        at = nxt


def _secret_param(name: str) -> bool:
    low = name.lower()
    if "%" in low:
        low = low.replace("%5f", "_").replace("%2d", "-")
    return low in _QUERY_NAMES or is_secret_key(low)


_MEMO_LENGTH = 128  # characters of a string the scanners remember as clean
_MEMO_SIZE = 20_000  # strings remembered per scanner
_SCANNERS = {REDACTED: _Scanner(REDACTED), "[API_KEY]": _Scanner("[API_KEY]")}
_DEFAULT = _SCANNERS[REDACTED]


def redact_value(value: Any, mask: str = REDACTED) -> Any:
    """``value`` with every secret it holds masked, if it is a string (see the module doc);
    anything else is returned as is. Clean strings come back unchanged (the same object)."""
    if type(value) is not str:
        if not isinstance(value, str):
            return value
        value = str.__str__(value)
    if len(value) < MIN_LENGTH:
        return value
    scanner = _SCANNERS.get(mask)
    if scanner is None:
        scanner = _Scanner(mask)
    return scanner.scan(value)


# -- structures ------------------------------------------------------------------------------
class _Walk:
    __slots__ = ("budget", "extra", "scanner")

    def __init__(self, extra: frozenset[str], scanner: _Scanner) -> None:
        self.extra = extra
        self.scanner = scanner
        self.budget = MAX_NODES

    def secret_key(self, key: Any) -> bool:
        if is_secret_key(key):
            return True
        return bool(self.extra) and _listed(_key_facts(key if type(key) is str else str(key))[1], self.extra)

    def value(self, value: Any, depth: int) -> Any:
        self.budget -= 1
        kind = type(value)
        if kind is str:
            if len(value) < MIN_LENGTH:
                return value
            if self.budget < 0:
                return self.scanner.mask
            return self.scanner.scan_short(value) if len(value) <= _MEMO_LENGTH else self.scanner.scan(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if depth >= MAX_DEPTH or self.budget < 0:
            return self.scanner.mask
        if kind is dict or isinstance(value, Mapping):
            out = {}
            clean = self.scanner._clean
            for key, item in value.items():
                if type(key) is str and len(key) >= MIN_LENGTH and key not in clean:
                    key = self.scanner.scan_short(key)
                secret = _answers.get(key)  # is_secret_key's memo, read here: this runs per key
                if secret is None or (not secret and self.extra):
                    secret = self.secret_key(key)
                if secret:
                    out[key] = self.masked(item, depth + 1)
                    continue
                # the leaves of a flat mapping (span attributes, metadata) without a call each:
                # what value() returns for them
                of = type(item)
                if (
                    (of is str and (len(item) < MIN_LENGTH or (item in clean and self.budget > 0)))
                    or of is int
                    or of is float
                    or of is bool
                    or item is None
                ):
                    self.budget -= 1
                    out[key] = item
                else:
                    out[key] = self.value(item, depth + 1)
            return out
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            return [self.value(item, depth + 1) for item in value]
        if isinstance(value, str):
            return self.value(str.__str__(value), depth)
        return value

    def masked(self, value: Any, depth: int) -> Any:
        """Every leaf of ``value`` masked (None, booleans and empty strings stay)."""
        self.budget -= 1
        if value is None or value == "" or isinstance(value, bool):
            return value
        if depth >= MAX_DEPTH or self.budget < 0:
            return self.scanner.mask
        if isinstance(value, Mapping):
            return {k: self.masked(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.masked(v, depth + 1) for v in value]
        return self.scanner.mask


def redact_mapping(obj: Any, extra_keys: Iterable[str] = (), mask: str = REDACTED) -> Any:
    """A copy of ``obj`` (nested mappings and lists) with every value under a secret-named key
    masked and every other string passed through :func:`redact_value`; the input is never
    modified. Bounded: past :data:`MAX_DEPTH` levels or :data:`MAX_NODES` values, values are
    masked. Scalars come back as they are (strings redacted)."""
    extra = _normalize_names(extra_keys) if extra_keys else frozenset()
    scanner = _SCANNERS.get(mask) or _Scanner(mask)
    return _Walk(extra, scanner).value(obj, 0)


def _masked_scalar(value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, Mapping | list | tuple):
        return _Walk(frozenset(), _DEFAULT).masked(value, 0)
    return REDACTED


def redact_tag(key: str, value: str) -> str:
    """A run tag's value as it may be stored: ``***`` under a secret-named key, else redacted."""
    if is_secret_key(key):
        return REDACTED if value else value
    return value if len(value) < MIN_LENGTH else _DEFAULT.scan(value)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be stored: ``--api-key X`` / ``--password=X`` masked, and every
    argument redacted by value."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        text = str(arg)
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if text.startswith("-") and len(text) > 1:
            name, eq, value = text.partition("=")
            if is_secret_key(name.lstrip("-")):
                if eq:
                    out.append(f"{name}={REDACTED}")
                else:
                    out.append(text)
                    hide_next = True
                continue
        out.append(redact_value(text))
    return out


# -- conversations ----------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
_PHONE = re.compile(
    r"""(?=[+(\d])(?:
        (?<![\w+.])\+\d{8,15}(?![\w.])
      | (?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w]|[.-]\d)
    )""",
    re.VERBOSE,
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")
_IP = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_PLACEHOLDER = _SCANNERS["[API_KEY]"]


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15 or _DATE.fullmatch(text) or _IP.fullmatch(text):
        return text
    return "[PHONE]"


def redact_text(text: str) -> str:
    """``text`` with secrets, e-mails and phone numbers replaced by placeholders.

    Each pattern runs only when the text holds what it needs (a secret's hint, an '@',
    a digit), so clean prose costs a few substring scans.
    """
    text = _PLACEHOLDER.scan(text)
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    if _has_digit(text):
        text = _PHONE.sub(_phone, text)
    return text


def _redact_value(value: Any, fn: Any, depth: int = 0) -> Any:
    kind = type(value)
    if kind is str:
        return fn(value)
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if depth >= MAX_DEPTH:
        return REDACTED
    if kind is dict or isinstance(value, Mapping):
        return {k: _redact_value(v, fn, depth + 1) for k, v in value.items()}
    if isinstance(value, str):
        return fn(str.__str__(value))
    if isinstance(value, list | tuple):
        return [_redact_value(v, fn, depth + 1) for v in value]
    return value


def _redact_message(message: Any, fn: Any) -> Any:
    if type(message) is not dict and not isinstance(message, Mapping):
        return message
    copy = dict(message)
    content = message.get("content")
    if content is not None:
        # Content parts ({"type": "text", "text": ...}) and tool-call arguments are text too.
        copy["content"] = _redact_value(content, fn)
        if "tool_calls" in copy:
            copy["tool_calls"] = _redact_value(copy["tool_calls"], fn)
    return copy


def redact_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in conversation redactor: a copy of a normalized record with message texts,
    metadata strings and the feedback comment passed through :func:`redact_text`."""
    out = dict(record)
    out["messages"] = [_redact_message(m, redact_text) for m in record.get("messages") or ()]
    out["metadata"] = _redact_value(record.get("metadata") or {}, redact_text)
    feedback = record.get("user_feedback")
    if isinstance(feedback, Mapping) and isinstance(feedback.get("comment"), str):
        out["user_feedback"] = {**feedback, "comment": redact_text(feedback["comment"])}
    return out


def _secret_message(message: Any) -> Any:
    """A message with its secrets masked (the same object when it holds none: nothing here
    ever modifies what it is given). Its strings are scanned, its parts and tool calls walked."""
    if type(message) is not dict:
        return redact_mapping(message) if isinstance(message, Mapping) else message
    out = None
    for key, value in message.items():
        kind = type(value)
        if kind is str:
            if len(value) < MIN_LENGTH and value:
                new: Any = REDACTED if is_secret_key(key) else value
            elif is_secret_key(key):
                new = REDACTED if value else value
            else:
                new = _DEFAULT.scan(value)
        elif value is None or kind is int or kind is float or kind is bool:
            continue
        else:
            new = _Walk(frozenset(), _DEFAULT).masked(value, 0) if is_secret_key(key) else redact_mapping(value)
        if new is not value:
            if out is None:
                out = dict(message)
            out[key] = new
    return message if out is None else out


def _plain_texts(items: Any, texts: list[str]) -> bool:
    """Collect the strings of a mapping of scalars into ``texts``; False if it holds anything
    else (a list, a mapping) or a value under a secret-named key."""
    if type(items) is not dict:
        return False
    for key, value in items.items():
        kind = type(value)
        if kind is str:
            if value and is_secret_key(key):
                return False
            if len(value) >= MIN_LENGTH:
                texts.append(value)
        elif not (value is None or kind is int or kind is float or kind is bool):
            return False
    return True


_known_clean: dict[str, None] = {}
_KNOWN_CLEAN_ENTRIES = 4096
_KNOWN_CLEAN_LENGTH = 2048


def _clean_record(record: Mapping[str, Any]) -> bool:
    """True when a record certainly holds no secret: plain messages and metadata whose texts,
    joined, pass none of the scanner's gates (the common case, at a fraction of a full scan)."""
    texts: list[str] = []
    for message in record.get("messages") or ():
        if not _plain_texts(message, texts):
            return False
    metadata = record.get("metadata")
    if metadata and not _plain_texts(metadata, texts):
        return False
    feedback = record.get("user_feedback")
    if isinstance(feedback, Mapping) and isinstance(feedback.get("comment"), str):
        texts.append(feedback["comment"])
    known = _known_clean
    fresh = [text for text in texts if text not in known]
    if not fresh:
        return True
    if _could_hold_secret(fresh[0] if len(fresh) == 1 else "\n".join(fresh)):
        return False
    # Conversations repeat themselves (the system prompt, the history so far): remember what
    # was clean, bounded in entries and size, so the next record scans only its new turn.
    if len(known) > _KNOWN_CLEAN_ENTRIES:
        known.clear()
    for text in fresh:
        if len(text) <= _KNOWN_CLEAN_LENGTH:
            known[text] = None
    return True


def redact_record_secrets(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a normalized conversation record with secrets masked (``***``) in its messages
    (content, tool calls), metadata (by key name and value) and feedback comment. Applied to
    every record before it is stored, whatever redactor is configured."""
    out = dict(record)
    if _clean_record(record):
        return out
    out["messages"] = [_secret_message(m) for m in record.get("messages") or ()]
    metadata = record.get("metadata")
    if metadata:
        out["metadata"] = redact_mapping(metadata)
    feedback = record.get("user_feedback")
    if isinstance(feedback, Mapping) and isinstance(feedback.get("comment"), str):
        out["user_feedback"] = {**feedback, "comment": redact_value(feedback["comment"])}
    return out
