"""A small company knowledge-base bot: index the manuals once, then answer questions with sources.

    python examples/kb_bot.py                      # interactive
    python examples/kb_bot.py "What does a solid red light on the router mean?"
    python examples/kb_bot.py --kb ./kb --docs ./handbook   # keep the index in ./kb between runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ragglm import KnowledgeBase

MANUALS = Path(__file__).resolve().parent / "manuals"


def answer(kb: KnowledgeBase, question: str) -> None:
    def show(piece: str) -> None:
        print(piece, end="", flush=True)

    result = kb.ask(question, on_text=show)
    print()
    for citation in result.citations:
        page = f", page {citation.page}" if citation.page else ""
        print(f"  [{citation.id}] {Path(citation.source).name}{page}: {citation.text[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("question", nargs="*", help="ask once and exit; without it, ask interactively")
    parser.add_argument("--docs", type=Path, action="append", help="files or folders (default: the example manuals)")
    parser.add_argument("--kb", type=Path, help="folder to keep the index in between runs")
    parser.add_argument("--model", default=None, help="alias, .gguf, folder or openai:http://host:port/v1")
    args = parser.parse_args()

    kb = KnowledgeBase(args.kb, model=args.model)
    report = kb.add(args.docs or [MANUALS])  # unchanged files are skipped on later runs
    print(f"{len(kb.sources)} document(s), {len(kb)} chunk(s); {len(report.added)} (re-)indexed", file=sys.stderr)
    if args.question:
        answer(kb, " ".join(args.question))
        return
    print("Ask about the manuals (empty line to quit).", file=sys.stderr)
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            break
        if not question:
            break
        answer(kb, question)


if __name__ == "__main__":
    main()
