"""Prompt templates: shape, variables, syntax errors with positions, rendering, the sandbox."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.templates import normalize_template, render_template, template_variables
from keel.errors import InvalidInput

CHAT = [
    {"role": "system", "content": "You answer questions about {{ product }}."},
    {"role": "user", "content": "Context:\n{{ context }}\n\nQuestion: {{ question }}"},
]


# -- shape ---------------------------------------------------------------------
def test_normalize_text_and_chat():
    assert normalize_template("Hi {{ name }}") == "Hi {{ name }}"
    shaped = normalize_template(tuple(CHAT))
    assert shaped == CHAT
    assert shaped is not CHAT and shaped[0] is not CHAT[0]  # a new list of new dicts


def test_any_role_is_accepted():
    messages = [{"role": "tool", "content": "{}"}, {"role": "developer", "content": ""}]
    assert normalize_template(messages) == messages


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (42, "cannot be a int"),
        (b"Hi", "cannot be a bytes"),
        (None, "cannot be a NoneType"),
        ({"role": "user", "content": "x"}, "cannot be a dict"),
        ([], "at least one message"),
        (["Hi"], r"messages\[0\] is a str, not a dict"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], r"messages\[1\] has no 'content'"),
        ([{"content": "a"}], r"messages\[0\] has no 'role'"),
        ([{"role": "", "content": "a"}], r"messages\[0\]\['role'\] must be a non-empty string"),
        ([{"role": 1, "content": "a"}], r"messages\[0\]\['role'\] must be a non-empty string"),
        ([{"role": "user", "content": ["a"]}], r"messages\[0\]\['content'\] must be a string, not a list"),
        ([{"role": "user", "content": "a", "name": "x"}], r"messages\[0\] has unknown key 'name'"),
    ],
)
def test_bad_shapes_are_named(template, message):
    with pytest.raises(InvalidInput, match=message):
        normalize_template(template)
    with pytest.raises(InvalidInput, match=message):
        template_variables(template)


# -- variables -----------------------------------------------------------------
def test_variables_of_a_text():
    assert template_variables("Answer {{ question }} from {{ context }}. {{ question }}!") == ("context", "question")
    assert template_variables("No placeholders.") == ()
    assert template_variables("") == ()


def test_variables_of_a_chat_cover_every_message():
    assert template_variables(CHAT) == ("context", "product", "question")


def test_roles_are_not_templates():
    assert template_variables([{"role": "{{ who }}", "content": "hi"}]) == ()


def test_names_the_template_defines_are_not_variables():
    template = (
        "{% set greeting = 'Hi' %}{{ greeting }} {{ user.name }}\n"
        "{% for doc in docs %}{{ loop.index }}. {{ doc | trim }}{% endfor %}"
        "{% for i in range(limit) %}{{ i }}{% endfor %}"
    )
    assert template_variables(template) == ("docs", "limit", "user")


# -- syntax errors: found at registration, with line and column ---------------
def _syntax_error(template) -> str:
    with pytest.raises(InvalidInput, match="template syntax error") as caught:
        template_variables(template)
    return caught.value.message


@pytest.mark.parametrize(
    ("template", "line", "column", "reason"),
    [
        ("{{ x y }}", 1, 6, "got 'y'"),  # column of the unexpected token
        ("Hello\n  {{ name | }}", 2, 13, "expected token 'name'"),
        ("{{ 1 ! 2 }}", 1, 6, "unexpected char '!'"),
        ("first\nsecond {{ a.b) }}", 2, 14, "unexpected ')'"),
        ("a\r\nb {{ ( }}", 2, 8, "unexpected '}'"),  # CRLF line ends count as one line break
        ("{{ a }}\n   {% endfor %}", 2, 7, "unknown tag 'endfor'"),
        ("{% if %}yes{% endif %}", 1, 7, "Expected an expression"),
        ("x\n{{ a | shout }}", 2, 8, "No filter named 'shout'"),  # found when compiling, still at registration
        ("  {{- x y }}", 1, 9, "got 'y'"),  # whitespace control does not shift columns
    ],
)
def test_syntax_errors_report_line_and_column(template, line, column, reason):
    message = _syntax_error(template)
    assert f"at line {line}, column {column}:" in message
    assert reason in message


def test_syntax_error_shows_the_line_and_not_jinjas_offset():
    message = _syntax_error("{{ 1 ! 2 }}")
    assert "the line is '{{ 1 ! 2 }}'" in message
    assert not re.search(r"'!' at \d", message)


def test_unclosed_block_is_reported_at_the_end():
    message = _syntax_error("Docs:\n{% for d in docs %}\n{{ d }}")
    assert "at line 3," in message
    assert "'endfor'" in message


def test_chat_syntax_error_names_the_message():
    template = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{{ question }}\n{{ x y }}"}]
    message = _syntax_error(template)
    assert "in messages[1] at line 2, column 6:" in message


def test_include_import_and_extends_are_refused_at_registration():
    for template, keyword in [
        ("{% include 'other' %}", "include"),
        ("{% import 'macros' as m %}", "import"),
        ("{% from 'macros' import m %}", "from"),
        ("{% extends 'base' %}", "extends"),
    ]:
        message = _syntax_error(template)
        assert f"'{keyword}' is not allowed" in message
        assert "line 1, column 4" in message


# -- render --------------------------------------------------------------------
def test_render_text():
    assert render_template("Hi {{ name }}!", {"name": "Ada"}) == "Hi Ada!"


def test_render_keeps_the_trailing_newline_and_does_not_escape():
    assert render_template("{{ html }}\n", {"html": "<b>&amp;</b>"}) == "<b>&amp;</b>\n"


def test_render_logic_and_filters():
    template = "{% for d in docs %}[{{ loop.index }}] {{ d | upper }}\n{% endfor %}{{ user['name'] }}"
    assert render_template(template, {"docs": ["a", "b"], "user": {"name": "Ada"}}) == "[1] A\n[2] B\nAda"


def test_render_chat_returns_new_messages():
    messages = [dict(m) for m in CHAT]
    out = render_template(messages, {"product": "keel", "context": "docs", "question": "How?"})
    assert out == [
        {"role": "system", "content": "You answer questions about keel."},
        {"role": "user", "content": "Context:\ndocs\n\nQuestion: How?"},
    ]
    assert messages == CHAT  # the template is untouched


@given(st.text(), st.text())
def test_render_substitutes_values_verbatim(a, b):
    assert render_template("{{ a }}|{{ b }}", {"a": a, "b": b}) == f"{a}|{b}"


def test_missing_variable_is_named():
    with pytest.raises(InvalidInput, match="missing variable 'question'") as caught:
        render_template(CHAT, {"product": "keel", "context": "docs"})
    assert "'context', 'product', 'question'" in (caught.value.hint or "")


def test_missing_variables_are_all_named():
    with pytest.raises(InvalidInput, match="missing variables 'context', 'question'"):
        render_template(CHAT, {"product": "keel"})


def test_unknown_variable_is_an_error():
    with pytest.raises(InvalidInput, match="unknown variable 'qestion'"):
        render_template("{{ question }}", {"question": "q", "qestion": "typo"})
    with pytest.raises(InvalidInput, match="unknown variable 'x'") as caught:
        render_template("static", {"x": 1})
    assert "no variables" in (caught.value.hint or "")


def test_missing_and_unknown_together():
    with pytest.raises(InvalidInput, match="missing variable 'question'; unknown variable 'qestion'"):
        render_template("{{ question }}", {"qestion": "typo"})


def test_undefined_attribute_is_an_error_not_an_empty_string():
    with pytest.raises(InvalidInput, match="has no attribute 'name'"):
        render_template("Hi {{ user.name }}", {"user": {}})


def test_runtime_error_in_the_template_is_invalid_input():
    with pytest.raises(InvalidInput, match="ZeroDivisionError"):
        render_template("{{ 1 / n }}", {"n": 0})


def test_render_reports_syntax_errors_too():
    with pytest.raises(InvalidInput, match="line 1, column 6"):
        render_template("{{ x y }}", {"x": 1, "y": 2})


def test_variables_must_be_a_mapping_with_string_keys():
    with pytest.raises(InvalidInput, match="must be a dict"):
        render_template("{{ a }}", [("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a string"):
        render_template("{{ a }}", {1: "x"})  # type: ignore[dict-item]


# -- the sandbox ---------------------------------------------------------------
@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__class__.__init__.__globals__ }}",
        "{{ x | attr('__class__') }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ items.append(4) }}",
        "{{ d.update({'k': 1}) }}",
        "{{ d.pop('k') }}",
    ],
)
def test_sandbox_escapes_are_refused(template):
    values = {"x": 1, "items": [1, 2, 3], "d": {"k": 0}}
    names = set(template_variables(template))
    with pytest.raises(InvalidInput, match="sandbox forbids"):
        render_template(template, {k: v for k, v in values.items() if k in names})
    assert values["items"] == [1, 2, 3] and values["d"] == {"k": 0}


def test_sandbox_limits_ranges():
    with pytest.raises(InvalidInput, match="Range too big"):
        render_template("{{ range(n) | list | length }}", {"n": 10**9})


# The registration fast path for plain "{{ name }}" templates must agree with Jinja itself.
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jinja2 import meta as _jinja_meta  # noqa: E402

from keel.core import templates as _templates  # noqa: E402

_pieces = st.lists(
    st.one_of(
        st.text(alphabet="abc {}.!\n'", max_size=8),
        st.sampled_from(["{{ question }}", "{{name}}", "{{  x1 }}", "{{ range }}", "{{ a.b }}", "{{ 'q' }}"]),
    ),
    max_size=6,
)


@given(_pieces)
def test_plain_placeholder_fast_path_agrees_with_jinja(pieces):
    source = "".join(pieces)
    fast = _templates._plain_placeholders(source)
    if fast is None:
        return  # not a plain template: Jinja checks it
    tree = _templates._ENV.parse(source)  # a plain template always parses
    assert fast == frozenset(_jinja_meta.find_undeclared_variables(tree))
