"""The `ragglm` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ragglm.errors import RagglmError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Answer questions about your documents, with cited sources.",
)

_EMBEDDER_HELP = ("sentence-transformers folder or hub id (default all-MiniLM-L6-v2, packaged); "
                  "e.g. BAAI/bge-small-zh-v1.5 for Chinese. A knowledge base keeps the one it was built with.")

EXIT_NOTHING_READ = 1
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"ragglm: error: {message}", err=True)
    raise typer.Exit(code)


def _open_kb(docs: list[Path], kb: Path | None, quiet: bool, **settings):
    from ragglm.knowledge_base import KnowledgeBase

    knowledge_base = KnowledgeBase(kb, **settings)
    if docs:
        report = knowledge_base.add(docs, progress=not quiet and sys.stderr.isatty())
        for error in report.errors:
            typer.echo(f"ragglm: warning: {error}", err=True)
    if len(knowledge_base) == 0:
        _fail("nothing could be read from " + (", ".join(map(str, docs)) or "the knowledge base")
              + "; pass --docs with PDF, Markdown, text or HTML files", EXIT_NOTHING_READ)
    return knowledge_base


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    docs: list[Path] = typer.Option([], "--docs", "-d", help="File or folder to read (repeatable)."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base folder to load and update."),
    model: str | None = typer.Option(None, "--model", "-m", help="Alias (smollm2), .gguf file or model folder."),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="Chunks to retrieve."),
    mode: str = typer.Option("auto", "--mode", help="auto | retrieve | extractive."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    embedder: str | None = typer.Option(None, "--embedder", help=_EMBEDDER_HELP),
) -> None:
    """Answer QUESTION from the documents, citing file and page.

    Example: ragglm ask --docs ./manuals "How often should the filter be replaced?"
    """
    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    try:
        knowledge_base = _open_kb(docs, kb, as_json, model=model, top_k=top_k, embedder=embedder)
        on_text = None if as_json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        answer = knowledge_base.ask(question, mode=mode, on_text=on_text)
    except RagglmError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
        return
    typer.echo("")
    if answer.citations:
        typer.echo("\nSources:")
        for citation in answer.citations:
            page = f", page {citation.page}" if citation.page else ""
            typer.echo(f"  [{citation.id}] {citation.source}{page}: \"{citation.text}\"")


@app.command()
def index(
    docs: list[Path] = typer.Argument(..., help="Files or folders to read."),
    kb: Path = typer.Option(..., "--kb", help="Knowledge-base folder to create or update."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    embedder: str | None = typer.Option(None, "--embedder", help=_EMBEDDER_HELP),
) -> None:
    """Read documents into a knowledge-base folder; unchanged files are skipped."""
    from ragglm.knowledge_base import KnowledgeBase

    knowledge_base = KnowledgeBase(kb, embedder=embedder)
    report = knowledge_base.add(docs, progress=not as_json and sys.stderr.isatty())
    for error in report.errors:
        typer.echo(f"ragglm: warning: {error}", err=True)
    summary = {"added": report.added, "unchanged": report.unchanged, "chunks": report.chunks,
               "errors": [str(e) for e in report.errors], "total_chunks": len(knowledge_base)}
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        typer.echo(f"indexed {len(report.added)} file(s), {report.chunks} chunk(s); "
                   f"{len(report.unchanged)} unchanged; {len(report.errors)} error(s)")
    if not report.added and not report.unchanged:
        raise typer.Exit(EXIT_NOTHING_READ)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    docs: list[Path] = typer.Option([], "--docs", "-d", help="File or folder to read (repeatable)."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base folder."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    embedder: str | None = typer.Option(None, "--embedder", help=_EMBEDDER_HELP),
    reranker: str | None = typer.Option(None, "--reranker", help="Cross-encoder folder or hub id to rerank with."),
) -> None:
    """Show the chunks that best match QUERY (BM25 and embeddings, fused by language).

    Example: ragglm search --docs ./manuals "滤芯多久更换"
    """
    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    try:
        knowledge_base = _open_kb(docs, kb, as_json, embedder=embedder, reranker=reranker)
        hits = knowledge_base.search(query, top_k)
    except (RagglmError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"hits": [{"source": h.source, "page": h.page, "score": h.score, "text": h.text,
                                         "start": h.chunk.start, "end": h.chunk.end, "heading": h.chunk.heading}
                                        for h in hits]}, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, 1):
        page = f" p.{hit.page}" if hit.page else ""
        typer.echo(f"{rank}. {hit.source}{page} ({hit.score:.3f})\n   {' '.join(hit.text.split())[:200]}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
