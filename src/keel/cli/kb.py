"""``keel kb ...``: versioned knowledge bases from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.errors import InvalidInput

__all__ = ["kb_app"]

kb_app = typer.Typer(
    help="Knowledge bases: stage documents, commit versions, diff, search and export them.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NameArg = Annotated[str, typer.Argument(help="Knowledge base name.")]
RefArg = Annotated[str, typer.Argument(help="NAME@VERSION (e.g. support-docs@v2), or NAME for the newest.")]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="The version that was newest at this time: 2026-12-07T10:00:00.123Z (as 'keel kb log' prints), "
        "an offset (+01:00), or 1733500000s / 1733500000000ms.",
    ),
]


def _api() -> Any:
    from keel.sdk import kb
    from keel.sdk.session import get_session

    get_session(create=False)  # a CLI command never creates a workspace by accident
    return kb


def _at_ref(ref: str, at: str | None, command: str) -> tuple[str, str | None]:
    """``(name, version)`` of REF; with --at, REF must be a bare NAME (the time picks the version)."""
    name, version = _api().parse_ref(ref)
    if at is not None and version not in (None, "latest"):
        raise InvalidInput(
            f"give {ref} or --at, not both", f"--at picks the version: keel kb {command} {name} ... --at {at}"
        )
    return name, version


def _config_options(
    embedding_model: str | None,
    chunk_size: int | None,
    chunk_overlap: int | None,
    splitter: str | None,
    metadata_field: list[str] | None,
    max_document_bytes: int | None,
    description: str | None,
) -> dict[str, Any]:
    given = {
        "embedding_model": embedding_model,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "splitter": splitter,
        "metadata_fields": metadata_field,
        "max_document_bytes": max_document_bytes,
        "description": description,
    }
    return {k: v for k, v in given.items() if v is not None}


ModelOpt = Annotated[
    str | None,
    typer.Option("--embedding-model", "-e", help="hashing-384, all-MiniLM-L6-v2, openai:text-embedding-3-small..."),
]
SizeOpt = Annotated[int | None, typer.Option("--chunk-size", help="Largest chunk (characters; tokens for 'tokens').")]
OverlapOpt = Annotated[int | None, typer.Option("--chunk-overlap", help="What consecutive chunks share.")]
SplitterOpt = Annotated[str | None, typer.Option("--splitter", help="characters, tokens, sentences or markdown.")]
FieldOpt = Annotated[
    list[str] | None, typer.Option("--metadata-field", help="Metadata carried by hits and exports (repeatable).")
]
LimitOpt = Annotated[int | None, typer.Option("--max-document-bytes", help="Refuse larger documents.")]
DescOpt = Annotated[str | None, typer.Option("--description", "-d", help="What this knowledge base holds.")]


@kb_app.command("create")
def kb_create(
    name: NameArg,
    embedding_model: ModelOpt = None,
    chunk_size: SizeOpt = None,
    chunk_overlap: OverlapOpt = None,
    splitter: SplitterOpt = None,
    metadata_field: FieldOpt = None,
    max_document_bytes: LimitOpt = None,
    description: DescOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a knowledge base (default: hashing-384 embedder, 512-character chunks overlapping by 100)."""
    from keel.cli.render import print_json

    api = _api()
    options = _config_options(
        embedding_model, chunk_size, chunk_overlap, splitter, metadata_field, max_document_bytes, description
    )
    kb = api.create(name, **options)
    info = kb.info
    if as_json:
        print_json(info.to_dict())
        return
    typer.echo(
        f"created knowledge base {name} ({info.embedding_model}, {info.splitter} chunks of {info.chunk_size}, "
        f"overlap {info.chunk_overlap})"
    )


@kb_app.command("configure")
def kb_configure(
    name: NameArg,
    embedding_model: ModelOpt = None,
    chunk_size: SizeOpt = None,
    chunk_overlap: OverlapOpt = None,
    splitter: SplitterOpt = None,
    metadata_field: FieldOpt = None,
    max_document_bytes: LimitOpt = None,
    description: DescOpt = None,
) -> None:
    """Change the configuration the next commit uses (a new embedder or chunker re-embeds everything)."""
    api = _api()
    options = _config_options(
        embedding_model, chunk_size, chunk_overlap, splitter, metadata_field, max_document_bytes, description
    )
    if not options:
        raise InvalidInput("nothing to configure", f"e.g. keel kb configure {name} --chunk-size 256")
    kb = api.get(name).configure(**options)
    status = kb.status()
    typer.echo(f"configured {name}: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    if status.reembed_required:
        typer.echo(f"the next commit re-embeds every chunk: keel kb commit {name} --reembed -m ...")


@kb_app.command("list")
def kb_list(as_json: JsonOpt = False) -> None:
    """Every knowledge base with its configuration and newest version."""
    from keel.cli.render import print_json, table

    kbs = _api().list_kbs()
    if as_json:
        print_json([k.to_dict() for k in kbs])
        return
    table(
        ["knowledge base", "latest", "staged", "embedding model", "splitter", "size", "overlap"],
        [
            [
                k.name,
                f"v{k.latest_version}" if k.latest_version else "",
                k.staged,
                k.embedding_model,
                k.splitter,
                k.chunk_size,
                k.chunk_overlap,
            ]
            for k in kbs
        ],
    )


@kb_app.command("add")
def kb_add(
    name: NameArg,
    paths: Annotated[list[Path], typer.Argument(help="Text files and folders (folders: every file inside).")],
    glob: Annotated[str, typer.Option("--glob", help="Which files of a folder, e.g. '**/*.md'.")] = "**/*",
    as_json: JsonOpt = False,
) -> None:
    """Stage documents for the next commit (empty and non-UTF-8 files are skipped and listed)."""
    from keel.cli.progress import progress_bar
    from keel.cli.render import print_json

    kb = _api().get(name)
    files = [p for p in paths if not p.is_dir()]
    with progress_bar("kb add", enabled=not as_json) as progress:
        reports = [kb.add_directory(p, pattern=glob, progress=progress) for p in paths if p.is_dir()]
        if files:
            reports.append(kb.add_documents(files, progress=progress))
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    for report in reports:
        typer.echo(report.summary())


@kb_app.command("remove")
def kb_remove(
    name: NameArg,
    ids: Annotated[list[str], typer.Argument(help="Document sources or ids (or id prefixes).")],
) -> None:
    """Stage the removal of documents."""
    removed = _api().get(name).remove_documents(ids)
    typer.echo(f"staged the removal of {len(removed)} documents: {', '.join(removed)}")


@kb_app.command("status")
def kb_status(name: NameArg, as_json: JsonOpt = False) -> None:
    """What the next commit would change: staged documents and configuration changes."""
    from keel.cli.render import print_json

    status = _api().get(name).status()
    if as_json:
        print_json(status.to_dict())
        return
    latest = f"v{status.latest_version}" if status.latest_version else "no versions yet"
    typer.echo(f"knowledge base {name} ({latest})")
    if not status:
        typer.echo("nothing staged")
        return
    for label, keys in (("new", status.added), ("modified", status.modified), ("removed", status.removed)):
        for key in keys:
            typer.echo(f"  {label + ':':<10} {key}")
    for data in status.data_sources:
        typer.echo(f"  {'data:':<10} {data['path']}@{data['oid'][:12]}")
    for change in status.config:
        typer.echo(f"  {'config:':<10} {change.field} {change.old} -> {change.new}")
    if status.reembed_required:
        typer.echo(f"the next commit re-embeds every chunk: keel kb commit {name} --reembed -m ...")


@kb_app.command("commit")
def kb_commit(
    name: NameArg,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed.")] = "",
    reembed: Annotated[bool, typer.Option("--reembed", help="Allow re-embedding every chunk.")] = False,
    author: Annotated[str | None, typer.Option("--author", help="Who (default: this user).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the next version from the staged documents (embeds only chunks not embedded before)."""
    from keel.cli.progress import progress_bar
    from keel.cli.render import print_json

    kb = _api().get(name)
    with progress_bar("kb commit", enabled=not as_json) as progress:
        version = kb.commit(message, reembed=reembed, author=author, progress=progress)
    if as_json:
        print_json(version.to_dict())
        return
    if not version.created:
        typer.echo(f"nothing to commit: {version.ref} is up to date")
        return
    typer.echo(
        f"committed {version.ref}: {version.document_count} documents, {version.chunk_count} chunks "
        f"({version.embedded_chunks} embedded, {version.reused_chunks} reused)"
    )


@kb_app.command("log")
def kb_log(name: NameArg, as_json: JsonOpt = False) -> None:
    """Every version, newest first."""
    from keel.cli.render import print_json, table
    from keel.core.times import format_at

    versions = _api().get(name).log()
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    table(
        ["version", "parent", "created", "author", "docs", "chunks", "embedded", "model", "chunker", "message"],
        [
            [
                v.version,
                f"v{v.parent}" if v.parent else "",
                format_at(v.created_at),
                v.author,
                v.document_count,
                v.chunk_count,
                v.embedded_chunks,
                v.embedding_model,
                f"{v.splitter}/{v.chunk_size}/{v.chunk_overlap}",
                v.message,
            ]
            for v in versions
        ],
        title=f"knowledge base {name}",
    )


@kb_app.command("show")
def kb_show(ref: RefArg, at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """One version: when and by whom it was committed, its documents, chunks and configuration."""
    from keel.cli.render import print_json
    from keel.core.times import format_at

    name, version = _at_ref(ref, at, "show")
    found = _api().get(name).version(version, at)
    if as_json:
        print_json(found.to_dict())
        return
    parent = f" (parent v{found.parent})" if found.parent else ""
    typer.echo(f"{found.ref}{parent}: committed {format_at(found.created_at)} by {found.author}")
    if found.message:
        typer.echo(f"  message:    {found.message}")
    typer.echo(
        f"  contents:   {found.document_count} documents, {found.chunk_count} chunks "
        f"({found.embedded_chunks} embedded, {found.reused_chunks} reused)"
    )
    typer.echo(f"  embedder:   {found.embedding_model} ({found.dimension} dimensions)")
    typer.echo(f"  chunker:    {found.splitter}, size {found.chunk_size}, overlap {found.chunk_overlap}")
    typer.echo(f"  manifest:   {found.manifest_hash}")
    for data in found.data_sources:
        typer.echo(f"  data:       {data['path']}@{data['oid'][:12]}")


@kb_app.command("diff")
def kb_diff(
    a: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. support-docs@v1.")],
    b: Annotated[str, typer.Argument(help="NAME@VERSION, or just VERSION of the same knowledge base.")],
    as_json: JsonOpt = False,
) -> None:
    """Documents added/removed/modified, chunks added/removed and config changes between two versions."""
    from keel.cli.render import print_json

    api = _api()
    name, va = api.parse_ref(a)
    other, vb = api.parse_ref(b if "@" in b else f"{name}@{b}")
    if other != name:
        raise InvalidInput("diff compares two versions of one knowledge base", f"keel kb diff {name}@v1 {name}@v2")
    if va is None or vb is None:
        raise InvalidInput("give both versions", f"keel kb diff {name}@v1 {name}@v2")
    diff = api.get(name).diff(va, vb)
    if as_json:
        print_json(diff.to_dict())
        return
    changes = diff.changes
    typer.echo(f"{name} {diff.a.version} -> {diff.b.version}")
    for doc in changes.added:
        typer.echo(f"  + {doc.key} ({len(doc.chunks)} chunks)")
    for doc in changes.removed:
        typer.echo(f"  - {doc.key} ({len(doc.chunks)} chunks)")
    for old, new in changes.modified:
        typer.echo(f"  ~ {old.key} ({len(old.chunks)} -> {len(new.chunks)} chunks)")
    for change in changes.config:
        typer.echo(f"  config {change.field}: {change.old} -> {change.new}")
    typer.echo(
        f"documents: {len(changes.added)} added, {len(changes.removed)} removed, {len(changes.modified)} modified, "
        f"{changes.unchanged_documents} unchanged; chunks: {len(changes.chunks_added)} added, "
        f"{len(changes.chunks_removed)} removed"
    )


@kb_app.command("search")
def kb_search(
    ref: RefArg,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many hits.")] = 5,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Exact cosine top-k search of a version (the same query always returns the same hits)."""
    from keel.cli.render import print_json, table

    api = _api()
    name, version = _at_ref(ref, at, "search")
    hits = api.get(name).search(query, top_k, version, at)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    table(
        ["rank", "score", "source", "chunk", "text"],
        [[h.rank, round(h.score, 4), h.source, h.position, " ".join(h.text.split())[:100]] for h in hits],
    )


@kb_app.command("export")
def kb_export(
    ref: RefArg,
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl or parquet.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default NAME-VERSION.FORMAT).")
    ] = None,
    at: AtOpt = None,
) -> None:
    """Write a version's chunks with their embeddings (jsonl or parquet) for a vector database."""
    api = _api()
    name, version = _at_ref(ref, at, "export")
    kb = api.get(name)
    found = kb.version(version, at)
    path = output or Path(f"{name}-{found.version}.{format}")
    kb.export(path, version=found.number, format=format)
    typer.echo(f"exported {found.ref} ({found.chunk_count} chunks) to {path}")
