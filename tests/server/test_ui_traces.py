"""The traces pages through the ASGI app: the traces table (filter, errors shown on the page,
sort, pages, figures by day and by model), the trace page (the waterfall, each span's
details, links to the run, the conversation and the prompt version only when they exist
and may be opened, scores), the span fields loaded on click (JSON, through the service's
operations), escaping of hostile span content, and who may see what (a project the user
cannot read answers like an unknown one)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.server import create_app
from keel.services.auth import AuthStore
from trace_seed import BIG, CONVERSATION, HIDDEN, PROJECT, XSS, XSS_ATTR, SeededTraces, seed_traces

PASSWORD = "correct horse battery"
# rita reads the project and the registries; pia only the project; nora nothing.
USERS = (("rita", True, True), ("pia", True, False), ("nora", False, False))


@dataclass
class Site:
    app: FastAPI
    data: SeededTraces
    clients: dict[str, TestClient] = field(default_factory=dict)

    def as_user(self, name: str) -> TestClient:
        """A signed-in client for ``name``."""
        if name not in self.clients:
            client = TestClient(self.app)
            client.__enter__()
            client.get("/ui/login")
            data = {"user": name, "password": PASSWORD, "login_token": client.cookies["keel_login"]}
            assert client.post("/ui/login", data=data, follow_redirects=False).status_code == 303
            self.clients[name] = client
        return self.clients[name]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("ui-traces")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    for user, project, registries in USERS:
        auth.create_user(user)
        auth.set_password(user, PASSWORD, "test")
        if project:
            auth.grant(user, PROJECT, "reader", "test")
        if registries:
            auth.grant(user, "@registries", "reader", "test")
    built = Site(app, seed_traces(app.state.keel.store))
    yield built
    for client in built.clients.values():
        client.__exit__(None, None, None)


def _list(site: Site, user: str = "rita", **params: object) -> tuple[int, str, list[str]]:
    """Status, page and the trace ids of the table's rows, in order."""
    page = site.as_user(user).get(f"/ui/projects/{PROJECT}/traces", params=params)
    ids = re.findall(rf'<a href="/ui/projects/{PROJECT}/traces/([0-9a-f]{{32}})">', page.text)
    return page.status_code, page.text, ids


def _trace(site: Site, trace_id: str, user: str = "rita") -> str:
    page = site.as_user(user).get(f"/ui/projects/{PROJECT}/traces/{trace_id}")
    assert page.status_code == 200, page.text[:2000]
    return page.text


def _field_url(site: Site, trace_id: str, span_id: str, which: str, project: str = PROJECT) -> str:
    return f"/ui/projects/{project}/traces/{trace_id}/spans/{span_id}/{which}"


def test_the_table_lists_every_trace_with_its_columns_and_figures(site: Site) -> None:
    status, text, ids = _list(site)
    assert status == 200
    assert len(ids) == 33 and ids[0] == site.data.small[-1]  # newest first
    assert "33 traces" in text and "2 failed (6.1%)" in text
    row = text[text.index(f"/traces/{site.data.agent}") :].split("</tr>")[0]
    for cell in ("support-agent", "1.45 s", ">7<", ">976<", "$0.00022", "gpt-4o-mini", "support-answer@1.0.0",
                 CONVERSATION, site.data.run_id[:8]):  # fmt: skip
        assert cell in row, cell
    assert f'href="/ui/runs/{site.data.run_id}"' in row
    assert 'href="/ui/prompts/support-answer/versions/1.0.0"' in row
    stats = text[text.index('class="grid narrow stats"') :].split("</table>")[0]
    assert "2025-12-07" in stats and ">33<" in stats and "6.1%" in stats
    by_model = _list(site, by="model")[1]
    stats = by_model[by_model.index('class="grid narrow stats"') :].split("</table>")[0]
    assert ">gpt-4o<" in stats and ">gpt-4o-mini<" in stats  # links narrowing the table to the model
    assert "filter=model+%3D+%27gpt-4o%27" in stats
    assert 'href="/ui/traces"' in text and ">Traces</a>" in text  # the navigation bar
    assert f'href="/ui/projects/{PROJECT}/runs"' in text  # the project's tabs


def test_filters_narrow_the_table_and_a_bad_one_is_shown_on_the_page(site: Site) -> None:
    assert sorted(_list(site, filter="status = 'error'")[2]) == sorted([site.data.failed, site.data.hostile])
    assert _list(site, filter="model = 'gpt-4o' and latency < 100")[2] == [site.data.small[i] for i in (6, 3, 0)]
    assert _list(site, filter=f"conversation_id = '{CONVERSATION}'")[2] == [site.data.failed, site.data.agent]
    status, text, ids = _list(site, filter="latency >>> 3")
    assert status == 400 and ids == []
    alert = re.search(r'<p class="flash error" role="alert">([^<]+)</p>', text)
    assert alert and "latency" in alert.group(1)
    assert 'value="latency &gt;&gt;&gt; 3"' in text  # the filter stays in its box, escaped
    status, text, _ = _list(site, filter=XSS)
    assert status == 400 and "<script>alert" not in text and "&lt;script&gt;" in text


def test_sorting_and_paging(site: Site) -> None:
    assert _list(site, sort="latency", desc=0)[2][:3] == site.data.small[:3]  # 10, 20, 30 ms
    assert _list(site, sort="cost", desc=1)[2][0] == site.data.small[0]  # $0.003
    status, text, first = _list(site, size=25)
    assert status == 200 and len(first) == 25 and "offset=25" in text and 'rel="prev"' not in text
    status, text, rest = _list(site, size=25, offset=25)
    assert len(rest) == 8 and not set(first) & set(rest) and 'rel="prev"' in text and 'rel="next"' not in text
    assert site.as_user("rita").get(f"/ui/projects/{PROJECT}/traces", params={"sort": "name"}).status_code == 400
    assert site.as_user("rita").get(f"/ui/projects/{PROJECT}/traces", params={"by": "user"}).status_code == 400


def test_the_trace_page_draws_the_waterfall_and_every_span_s_details(site: Site) -> None:
    text = _trace(site, site.data.agent)
    rows = re.findall(r'<tr data-span="([0-9a-f]{16})"[^>]*>\s*<td class="span-name (d\d+)">', text)
    depth = {1: "d0", 6: "d2"}
    assert rows == [(f"{n:016x}", depth.get(n, "d1")) for n in (1, 2, 6, 3, 4, 5, 7)]  # depth-first, by start
    bars = re.findall(r'<rect class="bar kind-(\w+)" x="([\d.]+)" y="1" width="([\d.]+)"', text)
    assert [b[0] for b in bars] == ["agent", "retrieval", "embedding", "rerank", "llm", "tool", "guardrail"]
    # Positioned by start offset and scaled by duration: the LLM call starts 175 ms into a 1450 ms
    # trace and takes 1010 ms; the 8 ms guardrail ends 1 ms before the trace does.
    assert bars[0] == ("agent", "0.0", "1000.0") and bars[4] == ("llm", "120.69", "696.55")
    assert bars[6] == ("guardrail", "993.79", "5.52")
    details = re.findall(r'<section class="span-detail[^"]*" id="span-([0-9a-f]{16})"', text)
    assert details == [r[0] for r in rows]
    llm = text[text.index(f'id="span-{site.data.big_span}"') :].split("</section>")[0]
    for shown in ("gpt-4o-mini", "812 in, 164 out", "$0.00022", "+175 ms", "1.01 s", "grounded", "evaluator",
                  "&#34;gen_ai.request.model&#34;: &#34;gpt-4o-mini&#34;", "Where is my order #1234?"):  # fmt: skip
        assert shown in llm, shown
    # The 34 KB answer is in the object store: a link loads it, the page does not carry it.
    assert BIG[:200] not in text
    url = _field_url(site, site.data.agent, site.data.big_span, "outputs")
    assert f'<a href="{url}" data-load>Load outputs (' in llm and "from the object store" in llm
    tool = text[text.index('id="span-0000000000000005"') :].split("</section>")[0]
    assert "cache miss" in tool and "Events" in tool
    assert "traces.js" in text and "traces.css" in text


def test_the_trace_page_links_what_exists_and_may_be_opened(site: Site) -> None:
    text = _trace(site, site.data.agent)
    summary = text[: text.index("<h2>Spans")] + text[text.index("</aside>") :]  # not the spans' details
    assert f'href="/ui/runs/{site.data.run_id}"' in summary
    assert f'href="/ui/conversations/{CONVERSATION}"' in summary
    assert 'href="/ui/prompts/support-answer/versions/1.0.0"' in summary
    assert "kb:faq@3" in summary and 'href="/ui/kb/faq' not in summary  # no such KB: text, no link
    assert "helpful" in summary and "great &lt;script&gt;" in summary  # the trace's feedback
    # Without a role on the registries, the conversation and prompt pages would refuse: no links.
    bare = _trace(site, site.data.agent, user="pia")
    assert f'href="/ui/runs/{site.data.run_id}"' in bare
    assert "/ui/conversations/" not in bare and "/ui/prompts/" not in bare
    assert CONVERSATION in bare and "support-answer@1.0.0" in bare


def test_failed_spans_are_visible(site: Site) -> None:
    text = _trace(site, site.data.failed)
    assert '<span class="trace-status error">error</span>' in text
    row = text[text.index(f'<tr data-span="{site.data.tool_span}"') :].split("</tr>")[0]
    assert 'class="span-error"' in row and '<span class="badge error">error</span>' in row
    assert "TimeoutError: the orders API did not answer in 250 ms" in text
    assert "1 failed" in text


def test_hostile_span_content_is_escaped_everywhere(site: Site) -> None:
    rita = site.as_user("rita")
    pages = [
        f"/ui/projects/{PROJECT}/traces/{site.data.hostile}",
        f"/ui/projects/{PROJECT}/traces",
        f"/ui/projects/{PROJECT}/traces?filter=status+%3D+%27error%27&by=model",
        f"/ui/projects/{PROJECT}/traces/{site.data.agent}",
    ]
    for path in pages:
        page = rita.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>bold" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    text = rita.get(pages[0]).text
    assert "root &lt;script&gt;alert(&#39;trace&#39;)&lt;/script&gt;" in text  # the name, as text
    assert "&#34;&gt;&lt;img src=x onerror=alert(3)&gt;" in text  # an attribute key and a model
    assert "&lt;b&gt;bold&lt;/b&gt;" in text  # an input
    assert '<pre class="status-message">&lt;script&gt;' in text


def test_span_fields_load_as_json_through_the_service(site: Site) -> None:
    rita = site.as_user("rita")
    big = rita.get(_field_url(site, site.data.agent, site.data.big_span, "outputs"))
    assert big.status_code == 200 and big.headers["content-type"] == "application/json"
    assert big.headers["x-content-type-options"] == "nosniff"
    assert big.json() == {"role": "assistant", "content": BIG}  # read back from the object store
    inputs = rita.get(_field_url(site, site.data.hostile, f"{1:016x}", "inputs")).json()
    assert inputs == {"question": XSS, "html": "<b>bold</b>"}  # JSON as stored: the page shows it as text
    attributes = rita.get(_field_url(site, site.data.hostile, f"{1:016x}", "attributes")).json()
    assert attributes["note"] == XSS and attributes[XSS_ATTR] == "key"
    events = rita.get(_field_url(site, site.data.agent, f"{5:016x}", "events")).json()
    assert [e["name"] for e in events] == ["cache miss"]
    for path, status in (
        (_field_url(site, site.data.agent, "00000000000000ff", "outputs"), 404),  # no such span
        (_field_url(site, site.data.agent, site.data.big_span, "secrets"), 404),  # no such field
        (_field_url(site, "ffffffff" * 4, site.data.big_span, "outputs"), 404),  # no such trace
        (_field_url(site, site.data.hidden, site.data.big_span, "outputs"), 404),  # another project's trace
        (_field_url(site, "not-hex", site.data.big_span, "outputs"), 400),
    ):
        response = rita.get(path)
        assert response.status_code == status, path
        assert response.json()["error"]["message"], path  # the API's JSON error, never an HTML page


def test_no_role_is_404_like_an_unknown_project(site: Site) -> None:
    nora = site.as_user("nora")
    data = site.data
    for path in (
        f"/ui/projects/{PROJECT}/traces",
        f"/ui/projects/{PROJECT}/traces?filter=latency+%3E%3E",  # not a 400: the filter is never read
        f"/ui/projects/{PROJECT}/traces/{data.agent}",
        f"/ui/projects/{PROJECT}/traces/{data.agent[:8]}",
    ):
        page = nora.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html") and data.run_id not in page.text
    unknown = nora.get("/ui/projects/no-such-project/traces")
    hidden = nora.get(f"/ui/projects/{PROJECT}/traces")
    assert unknown.text.replace("no-such-project", PROJECT) == hidden.text  # the same page, name aside
    response = nora.get(_field_url(site, data.agent, data.big_span, "outputs"))
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"no project {PROJECT!r}"
    # rita reads PROJECT only: the other project's traces are as unknown to her as to nora.
    rita = site.as_user("rita")
    assert rita.get(f"/ui/projects/{HIDDEN}/traces").status_code == 404
    assert rita.get(f"/ui/projects/{HIDDEN}/traces/{data.hidden}").status_code == 404
    assert rita.get(f"/ui/projects/{PROJECT}/traces/{data.hidden}").status_code == 404  # not in this project
    assert rita.get(_field_url(site, data.hidden, data.big_span, "outputs", HIDDEN)).status_code == 404
    index = rita.get("/ui/traces").text
    assert f"/ui/projects/{PROJECT}/traces" in index and HIDDEN not in index
    assert HIDDEN not in nora.get("/ui/traces").text and PROJECT not in nora.get("/ui/traces").text


def test_signed_out_pages_go_to_sign_in_and_fields_answer_401(site: Site) -> None:
    with TestClient(site.app) as anonymous:
        page = anonymous.get(f"/ui/projects/{PROJECT}/traces/{site.data.agent}", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
        field = anonymous.get(_field_url(site, site.data.agent, site.data.big_span, "outputs"))
        assert field.status_code == 401 and field.json()["error"]["code"] == "unauthenticated"


def test_unknown_and_malformed_trace_ids(site: Site) -> None:
    rita = site.as_user("rita")
    assert rita.get(f"/ui/projects/{PROJECT}/traces/{'e' * 32}").status_code == 404
    assert rita.get(f"/ui/projects/{PROJECT}/traces/zz").status_code == 400
    short = rita.get(f"/ui/projects/{PROJECT}/traces/{site.data.agent[:10]}")  # a unique prefix
    assert short.status_code == 200 and site.data.agent in short.text
