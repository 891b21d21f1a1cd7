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
    mode: str = typer.Option("auto", "--mode", help="auto | stuff | retrieve | extractive."),
    explain: bool = typer.Option(False, "--explain", help="Show how the context was chosen, with its numbers."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Answer QUESTION from the documents, citing file and page.

    Example: ragglm ask --docs ./manuals "How often should the filter be replaced?"
    """
    from ragglm.pipelines import MODES

    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    if mode not in MODES:
        _fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    try:
        knowledge_base = _open_kb(docs, kb, as_json, model=model, top_k=top_k)
        on_text = None if as_json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        answer = knowledge_base.ask(question, mode=mode, on_text=on_text)
    except RagglmError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
        return
    _print_answer_footer(answer, explain)


def _print_answer_footer(answer, explain: bool) -> None:
    typer.echo("")
    if answer.citations:
        typer.echo("\nSources:")
        for citation in answer.citations:
            page = f", page {citation.page}" if citation.page else ""
            inferred = " (matched to the answer)" if citation.inferred else ""
            typer.echo(f"  [{citation.id}] {citation.source}{page}{inferred}: \"{citation.text}\"")
    reason = answer.plan.get("reason", "")
    if answer.mode == "extractive" and "configure" in reason:
        typer.echo(f"\nnote: this is an extract, not a generated answer: {reason}", err=True)
    if explain:
        typer.echo("\n" + explain_plan(answer.plan))


def explain_plan(plan: dict) -> str:
    """The planner's decision and the numbers behind it, one fact per line."""
    if plan.get("mode") == "extractive" or "window" not in plan:
        lines = [f"plan: {plan.get('mode', '?')} ({plan.get('reason', '')})"]
    else:
        lines = [
            f"plan: {plan['mode']} ({plan['reason']})",
            f"  window {plan['window']} - question {plan['question_tokens']} - answer {plan['answer_tokens']}"
            f" - prompt {plan['overhead_tokens']} = {plan['budget_tokens']} tokens for sources",
            f"  documents {plan['document_tokens']} tokens, {plan['cached_tokens']} cached",
            f"  prefill ({plan['document_tokens']} - {plan['cached_tokens']}) / {plan['prefill_tok_s']} tok/s"
            f" = {plan['estimated_prefill_s']} s (budget {plan['time_budget_s']} s)",
            f"  sources given: {plan.get('sources_given', 0)}",
        ]
    for key in ("relevance", "support", "refused", "fallback", "standalone_question"):
        if key in plan:
            lines.append(f"  {key.replace('_', ' ')}: {plan[key]}")
    return "\n".join(lines)


@app.command()
def chat(
    docs: list[Path] = typer.Option([], "--docs", "-d", help="File or folder to read (repeatable)."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base folder to load and update."),
    model: str | None = typer.Option(None, "--model", "-m", help="Alias (smollm2), .gguf file or model folder."),
    mode: str = typer.Option("auto", "--mode", help="auto | stuff | retrieve | extractive."),
    explain: bool = typer.Option(False, "--explain", help="Show the standalone question and the plan."),
) -> None:
    """Ask questions one per line; follow-ups ("and how do I reset it?") use the conversation.

    Example: ragglm chat --docs ./manuals   (end with Ctrl-D)
    """
    from ragglm.pipelines import MODES

    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    if mode not in MODES:
        _fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    knowledge_base = _open_kb(docs, kb, False, model=model)
    interactive = sys.stdin.isatty()
    history: list[dict] = []
    while True:
        if interactive:
            typer.echo("> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        history.append({"role": "user", "content": line.strip()})
        answer = knowledge_base.chat(history, mode=mode,
                                     on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        _print_answer_footer(answer, explain)
        typer.echo("")
        history.append({"role": "assistant", "content": answer.text})


@app.command(name="eval")
def evaluate(
    qa: Path = typer.Option(..., "--qa", help="SQuAD-format JSON or JSONL (question, answers, context)."),
    docs: list[Path] = typer.Option([], "--docs", "-d", help="Documents to answer from; default: the QA file's passages."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base folder to keep the passages' index in."),
    model: str | None = typer.Option(None, "--model", "-m", help="Alias (smollm2), .gguf file or model folder."),
    mode: str = typer.Option("auto", "--mode", help="auto | stuff | retrieve | extractive."),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="Chunks to retrieve."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Ask N questions, spread evenly over the file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score answers on a QA file: containment, citation correctness, refusals, time per question.

    Example: ragglm eval --qa squad2_dev.json --limit 200
    """
    import hashlib

    from ragglm.documents import Document, Page
    from ragglm.knowledge_base import KnowledgeBase
    from ragglm.pipelines import MODES
    from ragglm.pipelines.eval import evaluate as run_eval
    from ragglm.pipelines.eval import load_qa

    if mode not in MODES:
        _fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    try:
        qa_set = load_qa(qa)
    except RagglmError as exc:
        _fail(str(exc))
    if docs:
        knowledge_base = _open_kb(docs, kb, as_json, model=model, top_k=top_k)
    elif qa_set.contexts:
        knowledge_base = KnowledgeBase(kb, model=model, top_k=top_k)
        for context_id, text in qa_set.contexts.items():
            text_hash = hashlib.sha256(text.encode()).hexdigest()
            if knowledge_base.store.source_hash(context_id) != text_hash:
                knowledge_base.store.add(context_id, text_hash, knowledge_base.chunker.split(
                    Document(context_id, [Page(None, text)])))
        knowledge_base.save()
    else:
        _fail(f"{qa} has no passages; give the documents with --docs PATH")
    items = qa_set.items
    if limit and limit < len(items):
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    show = not as_json and sys.stderr.isatty()
    report = run_eval(lambda q: knowledge_base.ask(q, mode=mode), items, str(qa),
                      progress=(lambda n, total: typer.echo(f"\r{n}/{total}", nl=False, err=True)) if show else None)
    figures = report.to_dict()
    if as_json:
        typer.echo(json.dumps(figures, ensure_ascii=False))
        return
    typer.echo("")
    for key, value in figures.items():
        typer.echo(f"{key}: {value}")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
