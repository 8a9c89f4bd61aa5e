"""Templates are bounded: output size, loop iterations, render time and integer size, each a clear
InvalidInput (issue 16), while ordinary templates and large variables render as before."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core import templates
from keel.core.prompt_content import PromptContent
from keel.core.templates import MAX_OUTPUT_CHARS, render_template, template_variables
from keel.errors import InvalidInput, KeelError


def refused(template, variables, message):
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match=message) as caught:
        render_template(template, variables)
    assert "\n" not in caught.value.message
    return time.perf_counter() - started


# -- the rows of the issue ---------------------------------------------------------------------
@pytest.mark.timeout(10)
def test_question_times_a_billion():
    spent = refused("{{ question * 10**9 }}", {"question": "Why?"}, r"a repeat \(\*\) would be 4,000,000,000")
    assert spent < 1


@pytest.mark.timeout(10)
def test_nested_range_loops_stop():
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    assert refused(loops, {}, r"template loops ran more than 100,000 times in one render") < 2


@pytest.mark.timeout(10)
def test_a_gigabyte_string_is_refused_at_registration_and_render():
    content = PromptContent("{{ 'a'*10**9 }}", model="gpt-4o")  # registration: checked, no code generated
    assert content.variables == ()
    refused(content.template, {}, r"a repeat \(\*\) would be 1,000,000,000 characters")
    # the same text compiled ahead (Jinja folds constants): no gigabyte built either
    templates._compile.cache_clear()
    refused("{{ 'a'*10**9 }}", {}, "too large")


def test_a_variable_named_self():
    with pytest.raises(InvalidInput, match="'self' is reserved"):
        template_variables("Hi {{ self }}")
    with pytest.raises(InvalidInput, match="'self' is reserved"):
        PromptContent("{{ self.x }}", model="m")
    with pytest.raises(InvalidInput, match="unknown variable 'self'") as caught:
        render_template("Hi {{ name }}", {"name": "Ada", "self": 1})
    assert "reserved" in caught.value.hint
    # the sdk's Prompt.render takes any variable name, self included, and answers like the core
    from keel.sdk.prompts import Prompt

    prompt = Prompt(None, "greet", PromptContent("Hi {{ name }}", model="m"))
    assert prompt.render(name="Ada") == "Hi Ada"
    with pytest.raises(InvalidInput, match="unknown variable 'self'"):
        prompt.render(name="Ada", self="x")


# -- the other ways to build something huge -------------------------------------------------------
@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("template", "variables", "message"),
    [
        ("{{ 10 ** (10 ** 9) }}", {}, r"integer too large: the result of '\*\*'"),
        ("{{ n ** n }}", {"n": 10**6}, r"integer too large"),
        ("{% set x = 2 ** 60000 %}{{ x * x }}", {}, r"integer too large: the result of '\*'"),
        ("{{ [1, 2] * 10**9 }}", {}, r"a repeat \(\*\)"),
        ("{{ 'a'|center(10**9) }}", {}, r"\|center width"),
        ("{{ 'a'.ljust(10**9) }}", {}, r"an argument of ljust\(\)"),
        ("{{ (1).to_bytes(10**9, 'big') }}", {}, r"an argument of to_bytes\(\)"),
        ("{{ '%1000000000d' % 1 }}", {}, r"a %-format width"),
        ("{{ '%*d' % (10**9, 1) }}", {}, r"a %-format width"),
        ("{{ '%.1000000000f'|format(1.5) }}", {}, r"a %-format width"),
        ("{{ '{:>1000000000}'.format(1) }}", {}, r"a format width"),
        ("{{ '{:>{w}}'.format(1, w=10**9) }}", {}, r"a format width"),
        ("{{ '{x:>{w}}'.format_map({'x': 1, 'w': 10**9}) }}", {}, r"a format width"),
        ("{{ 'ab'|replace('', 'c' * 1000)|replace('', 'd' * 1000) }}", {}, r"replace\(\) would be"),
        ("{{ x.replace('a', 'b' * 100000) }}", {"x": "a" * 100}, r"replace\(\) would be 10,000,000"),
        ("{{ (','*1000000).join(range(100)) }}", {}, r"join\(\) would be"),
        ("{{ range(1000)|join('x' * 10000) }}", {}, r"join\(\) would be"),
        ("{{ ('\t' * 1000).expandtabs(100000) }}", {}, r"an argument of expandtabs\(\)|expandtabs\(\) would be"),
        ("{{ x|indent(1000000) }}", {"x": "a\n" * 100}, r"\|indent would be"),
        ("{{ 'abc'|batch(10**9, 'x')|list }}", {}, r"\|batch\(linecount\)"),
        ("{{ [1]|slice(10**9)|list }}", {}, r"\|slice\(slices\)"),
        ("{{ 10|round(-10**9) }}", {}, r"\|round precision"),
        ("{{ [[1], [2]]|sum(start=[]) }}", {}, r"\|sum adds numbers"),
        ("{{ lipsum(10**6) }}", {}, r"lipsum\(\) takes at most 100 paragraphs"),
        # a list of lists of lists: shared parts count every time they appear
        (
            "{% set a = 'x' * 1000 %}{% set b = [a,a,a,a,a,a,a,a,a,a] %}{% set c = [b,b,b,b,b,b,b,b,b,b] %}"
            "{% set d = [c,c,c,c,c,c,c,c,c,c] %}{% set e = [d,d,d,d,d,d,d,d,d,d] %}{{ e|string|length }}",
            {},
            r"a value would be 10,011,111",
        ),
        ("{% set s = 'ab' %}" + "{% set s = s ~ s %}" * 64 + "{{ s|length }}", {}, r"a value would be 2,097,152"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            {},
            r"a value would be",
        ),
        ("{% set x %}{% for i in range(2000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}{{ x }}", {}, r"a block"),
        ("{% for i in range(2000) %}{{ 'y' * 1000 }}{% endfor %}", {}, r"the text would be"),
        (
            [{"role": "system", "content": "{{ 'y' * 1000000 }}"}, {"role": "user", "content": "{{ 'z' * 100000 }}"}],
            {},
            r"the text in messages\[1\] would be",
        ),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", {}, r"RecursionError"),
        ("{{" + "(" * 5000 + "x" + ")" * 5000 + "}}", {"x": 1}, r"nested too deeply"),
    ],
)
def test_huge_values_are_refused_before_they_are_built(template, variables, message):
    assert refused(template, variables, message) < 2


@pytest.mark.timeout(10)
def test_render_time_is_bounded(monkeypatch):
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.3)
    exponential = "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    spent = refused(exponential, {}, r"template took more than 0.3 s to render; stopped")
    assert spent < 2


# -- what still renders ------------------------------------------------------------------------------
def test_ordinary_templates_render_as_before():
    rag = (
        "{% for d in docs %}[{{ loop.index }}] {{ d.title|upper }}: {{ d.text|truncate(20) }}\n{% endfor %}"
        "{{ '%-5s|' % 'ab' }}{{ '{:>4}'.format(7) }}{{ [1, 2] * 2 }}{{ 'ab' * 3 }}{{ 2 ** 10 }}"
        "{{ ['a', 'b']|join(', ') }}{{ 'x\ny'|indent(2) }}{{ 'hi'|center(6) }}{{ [1, 2, 3]|sum }}"
    )
    docs = [{"title": f"doc {i}", "text": "lorem ipsum " * 5} for i in range(3)]
    out = render_template(rag, {"docs": docs})
    assert out.startswith("[1] DOC 0: lorem ipsum...\n[2] DOC 1: lorem ipsum...\n[3]")
    assert out.endswith("ab   |   7[1, 2, 1, 2]ababab1024a, bx\n  y  hi  6")


@pytest.mark.timeout(20)
def test_large_variables_raise_the_bounds_with_them():
    """The bounds are on what a template adds: a 3 MB document, iterated or repeated, still renders."""
    doc = "a" * 3_000_000
    assert render_template("{{ doc }}{{ doc }}", {"doc": doc}) == doc * 2
    assert len(render_template("{% for c in doc[:300000] %}{{ c }}{% endfor %}", {"doc": doc})) == 300_000
    assert len(render_template("{{ (doc ~ doc)|length }}", {"doc": doc})) == 7
    chunks = [{"text": "b" * 1000} for _ in range(3000)]
    out = render_template("{% for c in chunks %}{{ c.text }}\n{% endfor %}", {"chunks": chunks})
    assert len(out) == 3000 * 1001
    # a static template at the bound itself
    assert len(render_template("{{ 'a' * n }}", {"n": MAX_OUTPUT_CHARS})) == MAX_OUTPUT_CHARS


# -- bounded memory, measured in a fresh process ------------------------------------------------------
_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from keel.core.templates import render_template
    from keel.errors import KeelError
    template = sys.stdin.read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        render_template(template, {"question": "Why?"} if "question" in template else {})
        error = None
    except KeelError as exc:
        error = exc.message
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"error": error, "kib": after - before}))
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "template",
    [
        "{{ question * 10**9 }}",
        "{{ 'a'*10**9 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% set s = 'ab' %}" + "{% set s = s ~ s %}" * 64 + "{{ s }}",
    ],
)
def test_refusals_cost_little_memory(template):
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE], input=template, capture_output=True, text=True, timeout=50, check=True
    )
    result = json.loads(out.stdout)
    assert result["error"], result
    assert result["kib"] < 64 * 1024, result  # what was refused is gigabytes


# -- any template text: names or a KeelError; any render: text or a KeelError, in bounded time -------
_PIECES = st.sampled_from(
    ["{{ ", " }}", "{% ", " %}", "{# ", " #}", "for x in ", "range(100000)", "endfor", "if ", "endif", "set ",
     "macro f(n)", "endmacro", "f(n-1)", " * ", " ** ", " + ", " ~ ", " % ", "10**9", "'a'", "x", "self", "loop",
     "|center(10**9)", "|join", "|replace('', 'zz')", "|indent(99999)", "|batch(10**9)", "|round(-10**9)",
     "|sum(start=[])", ".ljust(10**9)", ".format(10**9)", "'{:>999999999}'", "'%999999999d'", "lipsum(10**6)",
     "namespace(s='a')", "[", "]", "(", ")", ",", "=", "\n", "{{", "}}", "{%", "%}", "raw", "endraw", "include 'x'",
     "extends 'x'", "import 'x' as y", "''.__class__", "\ud800", "\x00"]
)  # fmt: skip
_TEMPLATES = st.lists(_PIECES | st.text(max_size=3), max_size=25).map("".join)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],  # the patch is constant
)
@given(source=_TEMPLATES, value=st.one_of(st.text(max_size=20), st.integers(-(2**70), 2**70), st.none()))
@pytest.mark.timeout(120)
def test_any_template_is_names_or_a_keel_error(source, value, monkeypatch):
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.5)
    try:
        names = template_variables(source)
    except KeelError:
        return
    started = time.perf_counter()
    try:
        render_template(source, {name: value for name in names})
    except KeelError:
        pass
    assert time.perf_counter() - started < 5
