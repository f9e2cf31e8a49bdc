"""What the scripts that append to benchmarks/RESULTS.md share: the dated section they write (heading, the command
that produced it, the facts of the run, a table) and the chat prompts the KV scripts measure greedy text on."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

# The 8 chat prompts of tests/test_greedy_default_model.py, from their one list in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import chat_prompts  # noqa: E402

CHAT_PROMPTS = chat_prompts.CHAT_PROMPTS


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
