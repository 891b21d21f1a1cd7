"""The `ragglm` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ragglm.errors import RagglmError

__all__ = ["app", "main"]

_EXAMPLES = """\b
Examples:
  ragglm ask --docs ./manuals "How often should the filter be replaced?"
  ragglm ask --kb ./kb --json "What does error E2 mean?" | jq .citations
  ragglm index ./manuals --kb ./kb
  ragglm serve --kb ./kb --port 8000 --api-key SECRET
  ragglm ask --docs ./manuals --model openai:http://gpu-box:8000/v1 "..."

\b
Settings come from, last one winning: ragglm.toml (or ~/.config/ragglm/config.toml,
or the file named by RAGGLM_CONFIG), RAGGLM_* variables (RAGGLM_MODEL, RAGGLM_QUANT,
RAGGLM_DEVICE, RAGGLM_TOP_K, ...), then the options given.

\b
Exit codes: 0 done; 1 nothing could be read from the documents; 2 bad input or
configuration; 3 the model or a saved index could not be loaded; 4 the generation server could not
be used; 5 the server could not listen; 6 (index) some inputs could not be read, the
others were indexed and saved; 130 interrupted.
"""

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Answer questions about your documents, with cited sources.",
    epilog=_EXAMPLES,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragglm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from ragglm import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"ragglm {_version()}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print the version and exit."),
) -> None:
    pass


_EMBEDDER_HELP = ("sentence-transformers folder or hub id (default all-MiniLM-L6-v2, packaged); "
                  "e.g. BAAI/bge-small-zh-v1.5 for Chinese. A knowledge base keeps the one it was built with.")

_OCR_HELP = ("auto | always | never: read scanned pages (no text layer) and images by OCR; always: every "
             "PDF page [default: auto, or RAGGLM_OCR].")


def _use_ocr(ocr: str | None) -> None:
    """--ocr for this run; the parsing processes read it from the environment."""
    import os

    from ragglm.connectors.ocr import OCR_MODES

    if ocr is None:
        return
    if ocr not in OCR_MODES:
        _fail(f"--ocr {ocr!r}: use one of {', '.join(OCR_MODES)}")
    os.environ["RAGGLM_OCR"] = ocr


_ADAPTER_HELP = ("Fine-tuning folder applied to the local model: PEFT LoRA (adapter_config.json) or "
                 "P-Tuning v2 (config.json with pre_seq_len).")
_INSTRUCTIONS_HELP = ("Your own instructions for generated answers (tone, language, length), given after the "
                      "rules that keep answers to the documents; extracts quote as they are.")

EXIT_NOTHING_READ = 1
EXIT_BAD_INPUT = 2
EXIT_MODEL = 3
EXIT_REMOTE = 4
EXIT_LISTEN = 5
EXIT_SOME_UNREADABLE = 6
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"ragglm: error: {message}", err=True)
    raise typer.Exit(code)


def _exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, RagglmError) else EXIT_BAD_INPUT


def _printer(stream: bool | None):
    """on_text for streaming to stdout, or None; streaming is the default on a terminal."""
    if stream is None:
        stream = sys.stdout.isatty()
    return (lambda piece: (sys.stdout.write(piece), sys.stdout.flush())) if stream else None


def _open_kb(docs: list[str], kb: Path | None, quiet: bool, **settings):
    from ragglm.knowledge_base import KnowledgeBase

    knowledge_base = KnowledgeBase(kb, **settings)
    if docs:
        report = knowledge_base.add(docs, progress=not quiet and sys.stderr.isatty())
        for error in report.errors:
            typer.echo(f"ragglm: warning: {error}", err=True)
        for warning in report.warnings:
            typer.echo(f"ragglm: warning: {warning}", err=True)
    if len(knowledge_base) == 0:
        _fail("nothing could be read from " + (", ".join(map(str, docs)) or "the knowledge base")
              + "; pass --docs with PDF, Markdown, text or HTML files", EXIT_NOTHING_READ)
    return knowledge_base


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    docs: list[str] = typer.Option([], "--docs", "-d", help="File, folder or http(s) URL to read (repeatable)."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base folder to load and update."),
    model: str | None = typer.Option(None, "--model", "-m", help="Alias (smollm2), .gguf file or model folder."),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="Chunks to retrieve."),
    mode: str = typer.Option("auto", "--mode", help="auto | stuff | retrieve | extractive."),
    explain: bool = typer.Option(False, "--explain", help="Show how the context was chosen, with its numbers."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    quant: str | None = typer.Option(None, "--quant", help="Weight quantization: int8 | int4 | int4:g32 | none."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N | mps."),
    stream: bool | None = typer.Option(None, "--stream/--no-stream",
                                       help="Print the answer as it is generated [default: on a terminal]."),
    embedder: str | None = typer.Option(None, "--embedder", help=_EMBEDDER_HELP),
    ocr: str | None = typer.Option(None, "--ocr", help=_OCR_HELP),
    adapter: str | None = typer.Option(None, "--adapter", help=_ADAPTER_HELP),
    instructions: str | None = typer.Option(None, "--instructions", help=_INSTRUCTIONS_HELP),
) -> None:
    """Answer QUESTION from the documents, citing file and page.

    Example: ragglm ask --docs ./manuals "How often should the filter be replaced?"
    """
    from ragglm.pipelines import MODES

    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    if mode not in MODES:
        _fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    _use_ocr(ocr)
    on_text = None if as_json else _printer(stream)
    try:
        knowledge_base = _open_kb(docs, kb, as_json, model=model, top_k=top_k, quant=quant, device=device,
                                  embedder=embedder, adapter=adapter)
        answer = knowledge_base.ask(question, mode=mode, on_text=on_text, instructions=instructions)
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
        return
    typer.echo("" if on_text else answer.text)
    _print_answer_footer(answer, explain)


def _print_answer_footer(answer, explain: bool) -> None:
    if answer.citations:
        typer.echo("\nSources:")
        for citation in answer.citations:
            page = f", page {citation.page}" if citation.page else ""
            inferred = " (matched to the answer)" if citation.inferred else ""
            typer.echo(f"  [{citation.id}] {citation.source}{page}{inferred}: \"{citation.text}\"")
    reason = answer.plan.reason
    if answer.mode == "extractive" and "configure" in reason:
        typer.echo(f"\nnote: this is an extract, not a generated answer: {reason}", err=True)
    if explain:
        typer.echo("\n" + explain_plan(answer.plan))


def explain_plan(plan) -> str:
    """The planner's decision and the numbers behind it (an AnswerPlan), one fact per line."""
    lines = [f"plan: {plan.mode} ({plan.reason})"]
    context = plan.context
    if context is not None:
        lines += [
            f"  window {context.window} - question {context.question_tokens} - answer {context.answer_tokens}"
            f" - prompt {context.overhead_tokens} = {context.budget_tokens} tokens for sources",
            f"  documents {context.document_tokens} tokens, {context.cached_tokens} cached",
            f"  prefill ({context.document_tokens} - {context.cached_tokens}) / {context.prefill_tok_s} tok/s"
            f" = {context.estimated_prefill_s} s (budget {context.time_budget_s} s)",
            f"  sources given: {plan.sources_given or 0}",
        ]
        if context.prefix_cache:
            lines.append(f"  prefix cache: {context.prefix_cache}")
    for key in ("relevance", "support", "refused", "fallback", "standalone_question", "instructions"):
        value = getattr(plan, key)
        if value is not None:
            lines.append(f"  {key.replace('_', ' ')}: {value}")
    return "\n".join(lines)


@app.command()
def chat(
    docs: list[str] = typer.Option([], "--docs", "-d", help="File, folder or http(s) URL to read (repeatable)."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base folder to load and update."),
    model: str | None = typer.Option(None, "--model", "-m", help="Alias (smollm2), .gguf file or model folder."),
    mode: str = typer.Option("auto", "--mode", help="auto | stuff | retrieve | extractive."),
    explain: bool = typer.Option(False, "--explain", help="Show the standalone question and the plan."),
    compile_decode: bool = typer.Option(False, "--compile",
                                        help="Compile the decode step with torch.compile (tens of seconds at "
                                             "start); on CPU the native step it replaces is faster: for CUDA."),
    adapter: str | None = typer.Option(None, "--adapter", help=_ADAPTER_HELP),
    instructions: str | None = typer.Option(None, "--instructions", help=_INSTRUCTIONS_HELP),
) -> None:
    """Ask questions one per line; follow-ups ("and how do I reset it?") use the conversation.

    Example: ragglm chat --docs ./manuals   (end with Ctrl-D)
    """
    from ragglm.pipelines import MODES

    if not docs and kb is None:
        _fail("give the documents with --docs PATH (or a knowledge base with --kb FOLDER)")
    if mode not in MODES:
        _fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    knowledge_base = _open_kb(docs, kb, False, model=model, compile=compile_decode or None, adapter=adapter)
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
        answer = knowledge_base.chat(history, mode=mode, instructions=instructions,
                                     on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        typer.echo("")
        _print_answer_footer(answer, explain)
        typer.echo("")
        history.append({"role": "assistant", "content": answer.text})


@app.command(name="eval")
def evaluate(
    qa: Path = typer.Option(..., "--qa", help="SQuAD-format JSON or JSONL (question, answers, context)."),
    docs: list[str] = typer.Option([], "--docs", "-d", help="Documents to answer from; default: the QA file's passages."),
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

    from ragglm.knowledge_base import KnowledgeBase
    from ragglm.pipelines import MODES
    from ragglm.pipelines.eval import evaluate as run_eval
    from ragglm.pipelines.eval import load_qa

    if mode not in MODES:
        _fail(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    try:
        qa_set = load_qa(qa)
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    if docs:
        knowledge_base = _open_kb(docs, kb, as_json, model=model, top_k=top_k)
    elif qa_set.contexts:
        knowledge_base = KnowledgeBase(kb, model=model, top_k=top_k)
        for context_id, text in qa_set.contexts.items():
            knowledge_base.add_text(text, context_id, save=False)
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
    docs: list[str] = typer.Argument(..., help="Files, folders or http(s) URLs to read."),
    kb: Path = typer.Option(..., "--kb", help="Knowledge-base folder to create or update."),
    include: list[str] = typer.Option([], "--include", help="Only files matching this glob (repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Skip files and folders matching this glob (repeatable)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Parsing processes (default: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    embedder: str | None = typer.Option(None, "--embedder", help=_EMBEDDER_HELP),
    ocr: str | None = typer.Option(None, "--ocr", help=_OCR_HELP),
) -> None:
    """Read documents into a knowledge-base folder: unchanged files are skipped, changed ones
    re-indexed, files deleted from a folder removed; an interrupted run leaves the index as it was.

    Example: ragglm index ./manuals https://example.com/faq.html --kb ./kb --exclude "drafts/*"
    """
    from ragglm.knowledge_base import KnowledgeBase

    _use_ocr(ocr)
    try:
        knowledge_base = KnowledgeBase(kb, embedder=embedder)
        report = knowledge_base.add(docs, progress=not as_json and sys.stderr.isatty(),
                                    include=include, exclude=exclude, workers=workers)
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    except KeyboardInterrupt:
        _fail(f"interrupted; {kb} is unchanged", 130)
    for error in report.errors:
        typer.echo(f"ragglm: warning: {error}", err=True)
    for warning in report.warnings:
        typer.echo(f"ragglm: warning: {warning}", err=True)
    if not as_json:
        for note in report.notes:
            typer.echo(f"ragglm: note: {note}", err=True)
    if as_json:
        typer.echo(json.dumps({**report.to_dict(), "total_chunks": len(knowledge_base)}, ensure_ascii=False))
    else:
        typer.echo(f"indexed {len(report.added)} source(s), {report.pages} page(s), {report.chunks} chunk(s); "
                   f"{len(report.unchanged)} unchanged; {len(report.removed)} removed; "
                   f"{len(report.errors)} error(s)")
    if not report.added and not report.unchanged and not report.removed:
        raise typer.Exit(EXIT_NOTHING_READ)
    if report.errors:
        raise typer.Exit(EXIT_SOME_UNREADABLE)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    docs: list[str] = typer.Option([], "--docs", "-d", help="File, folder or http(s) URL to read (repeatable)."),
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
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    if as_json:
        typer.echo(json.dumps({"hits": [{"source": h.source, "page": h.page, "score": h.score, "text": h.text,
                                         "start": h.chunk.start, "end": h.chunk.end, "heading": h.chunk.heading}
                                        for h in hits]}, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, 1):
        page = f" p.{hit.page}" if hit.page else ""
        typer.echo(f"{rank}. {hit.source}{page} ({hit.score:.3f})\n   {' '.join(hit.text.split())[:200]}")


@app.command()
def serve(
    docs: list[str] = typer.Option([], "--docs", "-d", help="File, folder or http(s) URL to read (repeatable)."),
    kb: list[Path] = typer.Option([], "--kb", help="Knowledge-base folder to load and update (repeatable: "
                                                   "each is model ragglm:NAME, NAME its folder's name)."),
    kb_root: Path | None = typer.Option(None, "--kb-root",
                                        help="Folder whose sub-folders are knowledge bases, one each."),
    max_upload_mb: float | None = typer.Option(None, "--max-upload-mb", min=0.001,
                                               help="Largest document upload on the web page [default: 50]."),
    model: str | None = typer.Option(None, "--model", "-m",
                                     help="Alias (smollm2), .gguf file, model folder or openai:URL."),
    quant: str | None = typer.Option(None, "--quant", help="Weight quantization: int8 | int4."),
    adapter: str | None = typer.Option(None, "--adapter", help=_ADAPTER_HELP),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N | mps."),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="Chunks to retrieve per question."),
    host: str | None = typer.Option(None, "--host", envvar="RAGGLM_HOST",
                                    help="Address to listen on [default: 127.0.0.1]."),
    port: int | None = typer.Option(None, "--port", envvar="RAGGLM_PORT", help="[default: 8000]"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RAGGLM_API_KEY",
                                       help="Require 'Authorization: Bearer KEY' on /v1/ routes."),
    max_tokens_limit: int | None = typer.Option(None, "--max-tokens-limit", min=1,
                                                help="Most tokens a request may ask for [default: 1024]."),
    max_body_bytes: int | None = typer.Option(None, "--max-body-bytes", min=1,
                                              help="Largest request body [default: 1 MiB]."),
    max_pending: int | None = typer.Option(None, "--max-pending", min=1,
                                           help="Requests that may wait for the model [default: 64]."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", metavar="ORIGIN",
                                          help="Let pages from this origin call the API from a browser, e.g. "
                                               "https://app.example.com, or * for any (repeatable; off by "
                                               "default)."),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error."),
    compile_decode: bool = typer.Option(False, "--compile",
                                        help="Compile the decode step with torch.compile (tens of seconds at "
                                             "start); on CPU the native step it replaces is faster: for CUDA."),
) -> None:
    """Serve an OpenAI-compatible API: /v1/chat/completions, /v1/models, /health.

    Model "ragglm" answers from the documents with citations (in an extra "citations" field);
    the generator's own name (e.g. "smollm2") is plain chat. With --kb, --kb-root or --docs a web
    page at / asks questions and manages documents (API under /v1/knowledge-bases).

    \b
    Example:
      ragglm serve --docs ./manuals --port 8000 --api-key SECRET
      curl -H "Authorization: Bearer SECRET" http://127.0.0.1:8000/v1/chat/completions \\
        -d '{"model": "ragglm", "messages": [{"role": "user", "content": "What does E2 mean?"}]}'
    """
    from ragglm.config_file import serve_options_from_file
    from ragglm.server import ServerLimits, create_app
    from ragglm.server import serve as run_server

    try:
        options = serve_options_from_file()
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    host = host or options.get("host", "127.0.0.1")
    port = port if port is not None else options.get("port", 8000)
    api_key = api_key or options.get("api_key")
    limits = ServerLimits()
    limits.max_new_tokens = max_tokens_limit or options.get("max_tokens_limit", limits.max_new_tokens)
    limits.max_body_bytes = max_body_bytes or options.get("max_body_bytes", limits.max_body_bytes)
    limits.max_pending = max_pending or options.get("max_pending", limits.max_pending)
    if max_upload_mb is not None:
        limits.max_upload_bytes = int(max_upload_mb * 2**20)
    problem = _cannot_listen(host, port)
    if problem:
        _fail(f"cannot listen on {host}:{port}: {problem} (choose another --port)", EXIT_LISTEN)
    try:
        from ragglm.knowledge_base import KnowledgeBase

        settings = {"model": model, "quant": quant, "device": device, "top_k": top_k,
                    "compile": compile_decode or None, "adapter": adapter}
        if docs or kb or kb_root is not None:
            from ragglm.web import open_knowledge_bases

            # an empty knowledge base is fine here: documents can be added on the web page
            libraries = open_knowledge_bases(kb, kb_root, **settings)
            knowledge_base = libraries.first
            if docs:
                for error in knowledge_base.add(docs, progress=sys.stderr.isatty()).errors:
                    typer.echo(f"ragglm: warning: {error}", err=True)
            application = create_app(api_key=api_key, limits=limits, knowledge_bases=libraries,
                                     cors_origins=cors_origin)
            typer.echo(f"ragglm: knowledge bases {', '.join(libraries.names())}; web page at "
                       f"http://{host}:{port}/", err=True)
        else:  # no documents: a plain OpenAI-compatible model server
            knowledge_base = KnowledgeBase(**settings)
            application = create_app(knowledge_base, api_key=api_key, limits=limits, cors_origins=cors_origin)
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"ragglm: warning: serving on {host} without --api-key", err=True)
    typer.echo(f"ragglm: serving {len(knowledge_base)} chunk(s) with {knowledge_base.generator.name} "
               f"on http://{host}:{port}/v1", err=True)
    run_server(application, host, port, log_level)


def _cannot_listen(host: str, port: int) -> str | None:
    """Why host:port cannot be bound, checked before loading a model for minutes."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return str(exc)
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@app.command()
def quantize(
    src: str = typer.Argument(..., help="Alias (smollm2), .gguf file or model folder to quantize."),
    out: Path = typer.Argument(..., help="Folder to write the quantized checkpoint to."),
    quant: str = typer.Option("int4", "--quant", help="int8 | int4 | int4:g32 (group size after the colon)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    adapter: str | None = typer.Option(None, "--adapter",
                                       help="LoRA folder (PEFT) merged into the weights before they are quantized."),
) -> None:
    """Quantize a model once and save it; `--model OUT` then loads it without quantizing again."""
    from ragglm.engine.loading.quantize_checkpoint import save_quantized_checkpoint

    try:
        meta = save_quantized_checkpoint(src, out, quant, adapter=adapter)
    except RagglmError as exc:
        _fail(str(exc), _exit_code(exc))
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    summary = {"out": str(out), "scheme": meta["scheme"], "group_size": meta["group_size"], "bytes": size}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"wrote {meta['scheme']} checkpoint to {out} ({size / 2**20:.1f} MiB)")


def main() -> None:
    """The console entry point: user-facing errors become one line and a documented exit code."""
    try:
        app()
    except RagglmError as exc:
        typer.echo(f"ragglm: error: {exc}", err=True)
        sys.exit(_exit_code(exc))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
