"""The conformance suite is a checklist against the docs: every test names its page."""

from __future__ import annotations

import importlib
from pathlib import Path

from conformance_docs import DOCS

HERE = Path(__file__).resolve().parent


def test_every_conformance_test_names_its_page() -> None:
    modules = sorted(
        p.stem for p in HERE.glob("test_conformance_*.py") if p.stem != Path(__file__).stem
    )
    assert len(modules) >= 3
    missing, counted = [], 0
    for name in modules:
        module = importlib.import_module(name)
        for attr, test in vars(module).items():
            if not attr.startswith("test_") or not callable(test):
                continue
            counted += 1
            page = getattr(test, "__doc_page__", None)
            if page is None or not page[0].startswith(DOCS) or not page[1]:
                missing.append(f"{name}.{attr}")
    assert not missing, f"conformance tests without a documentation page: {missing}"
    assert counted >= 25
