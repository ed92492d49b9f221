"""The project owns its documents: docs/ARCHITECTURE.md exists, names every pass, target and
etch op, and nothing in the repository sends readers to a file outside it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import passes
from compiler import ops
from compiler.options import TARGETS
from passes.base import Pass

ROOT = Path(__file__).resolve().parents[2]
ARCH = ROOT / "docs" / "ARCHITECTURE.md"


def _pass_names() -> set[str]:
    import importlib
    import pkgutil

    names = set()
    for info in pkgutil.iter_modules(passes.__path__):
        module = importlib.import_module(f"passes.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Pass) and cls is not Pass and cls.__module__ == module.__name__:
                names.add(cls.name or cls.__name__)
    return names


def test_architecture_names_every_pass_target_and_etch_op() -> None:
    text = ARCH.read_text()
    missing = [p for p in sorted(_pass_names()) if f"`{p}`" not in text]
    missing += [t for t in TARGETS if f"{t}" not in text]
    missing += [op for op in sorted(ops.registry()) if op.startswith("etch.")
                and f"`{op}`" not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not mention {missing}"


def test_no_reference_to_files_outside_the_repository() -> None:
    """README and CONTRIBUTING point at docs/ARCHITECTURE.md, not ../shared/DESIGN.md; the
    code and the docs cite docs/ARCHITECTURE.md, not DESIGN.md."""
    readers = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    code = [ARCH] + [p for d in ("compiler", "passes", "backends", "runtime", "models",
                                 "benchmarks", "tests") for p in (ROOT / d).rglob("*.py")]
    bad = [p for p in readers if "../shared/DESIGN" in p.read_text()]
    bad += [p for p in code if p != Path(__file__) and re.search(r"\bDESIGN\.md",
                                                                 p.read_text())]
    assert not bad, f"still pointing outside the repository: {[str(p) for p in bad]}"
    for p in readers:
        assert "docs/ARCHITECTURE.md" in p.read_text(), p
