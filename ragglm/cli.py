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
    quant: str | None = typer.Option(None, "--quant", help="Weight quantization: int8 | int4 | none."),
) -> None:
    """Answer QUESTION from the documents, citing file and page.

    Example: ragglm ask --docs ./manuals "How often should the filter be replaced?"
    """
    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    try:
        knowledge_base = _open_kb(docs, kb, as_json, model=model, top_k=top_k, quant=quant)
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
) -> None:
    """Read documents into a knowledge-base folder; unchanged files are skipped."""
    from ragglm.knowledge_base import KnowledgeBase

    knowledge_base = KnowledgeBase(kb)
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
) -> None:
    """Show the chunks that best match QUERY."""
    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    knowledge_base = _open_kb(docs, kb, as_json)
    hits = knowledge_base.search(query, top_k)
    if as_json:
        typer.echo(json.dumps({"hits": [{"source": h.source, "page": h.page, "score": h.score, "text": h.text}
                                        for h in hits]}, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, 1):
        page = f" p.{hit.page}" if hit.page else ""
        typer.echo(f"{rank}. {hit.source}{page} ({hit.score:.3f})\n   {' '.join(hit.text.split())[:200]}")


@app.command()
def quantize(
    src: str = typer.Argument(..., help="Alias (smollm2), .gguf file or model folder to quantize."),
    out: Path = typer.Argument(..., help="Folder to write the quantized checkpoint to."),
    quant: str = typer.Option("int4", "--quant", help="int8 | int4 | int4:g32 (group size after the colon)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Quantize a model once and save it; `--model OUT` then loads it without quantizing again."""
    from ragglm.engine.engine import save_quantized_checkpoint

    try:
        meta = save_quantized_checkpoint(src, out, quant)
    except RagglmError as exc:
        _fail(str(exc))
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    summary = {"out": str(out), "scheme": meta["scheme"], "group_size": meta["group_size"], "bytes": size}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"wrote {meta['scheme']} checkpoint to {out} ({size / 2**20:.1f} MiB)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
