"""What the scripts that append to benchmarks/RESULTS.md share: the dated section they write (heading, the command
that produced it, the facts of the run, a table) and the chat prompts the KV scripts measure greedy text on."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

# The same 8 prompts as tests/test_greedy_default_model.py.
CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three fruits that are red.",
    "Translate 'good morning' into Spanish and German.",
    "Write a Python function that returns the square of a number.",
    "What is 17 + 25? Answer with the number.",
    "Give me a short tip for learning to cook.",
]


def section(title: str, script: str, facts: list[str], header: list[str], rows: list[str], extra=()) -> str:
    """A dated RESULTS.md section: `### date time — title`, the command (this process's arguments), the facts as
    bullets, the table (header cells and ready `| ... |` rows), then any extra lines."""
    command = f"HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/{script}{''.join(' ' + a for a in sys.argv[1:])}"
    return "\n".join(
        [
            f"### {datetime.datetime.now():%Y-%m-%d %H:%M} — {title}",
            "",
            f"- command: `{command}`",
            *(f"- {fact}" for fact in facts),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *rows,
            "",
            *extra,
        ]
    )


def append(text: str) -> None:
    with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
        f.write("\n" + text)
