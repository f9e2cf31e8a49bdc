"""The core's layering, read from its sources (issue 15's seam): the engine (csrc/engine/) includes nothing from a
backend's kernels (csrc/kernels/cpu/, and kernels/cuda/ to come); the op types every backend takes
(csrc/kernels/ops.h) include no backend; and the headers the engine includes from model/ and backend/ reach no
kernels/cpu header either, except through the CPU backend's own files."""

from __future__ import annotations

import re
from pathlib import Path

CSRC = Path(__file__).resolve().parents[1] / "csrc"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path: Path) -> list[str]:
    return INCLUDE.findall(path.read_text())


def closure(header: str) -> set[str]:
    """Every project header `header` includes, directly or not."""
    seen, todo = set(), [header]
    while todo:
        h = todo.pop()
        if h in seen or not (CSRC / h).exists():
            continue
        seen.add(h)
        todo += includes(CSRC / h)
    return seen


def test_engine_includes_no_backend_kernels():
    files = sorted((CSRC / "engine").glob("*.[ch]*"))
    assert files
    for f in files:
        bad = [i for i in includes(f) if i.startswith("kernels/cpu/") or i.startswith("kernels/cuda/")]
        assert not bad, f"{f.relative_to(CSRC)} includes {bad}"


def test_engine_headers_reach_no_cpu_kernels():
    """What the engine's header pulls in, transitively: the model's and the backend's interfaces, the op types."""
    reached = closure("engine/engine.h")
    assert "kernels/ops.h" in reached and "backend/backend.h" in reached
    assert not [h for h in reached if h.startswith("kernels/cpu/")], sorted(reached)


def test_op_types_include_no_backend():
    assert not [i for i in includes(CSRC / "kernels" / "ops.h") if i.startswith("kernels/")]
