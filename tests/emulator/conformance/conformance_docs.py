"""Each conformance test names the Anthropic documentation it follows.

``@follows(page, behaviour)`` records the page (and what on it) on the test function;
``test_every_conformance_test_names_its_page`` fails if a test in this directory has none,
so the suite stays a checklist against the docs (pages read 2026-11-29).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

DOCS = "https://platform.claude.com/docs/en"
PROMPT_CACHING = f"{DOCS}/build-with-claude/prompt-caching"
EXTENDED_THINKING = f"{DOCS}/build-with-claude/extended-thinking"
ADAPTIVE_THINKING = f"{DOCS}/build-with-claude/adaptive-thinking"
EFFORT = f"{DOCS}/build-with-claude/effort"
STOP_REASONS = f"{DOCS}/build-with-claude/handling-stop-reasons"
ERRORS = f"{DOCS}/api/errors"
RATE_LIMITS = f"{DOCS}/api/rate-limits"
TOOL_USE = f"{DOCS}/agents-and-tools/tool-use/overview"
BATCHES = f"{DOCS}/build-with-claude/batch-processing"
MODELS = f"{DOCS}/about-claude/models/overview"
MESSAGES_API = f"{DOCS}/api/messages"
MIGRATING_4_5 = f"{DOCS}/about-claude/models/migrating-to-claude-4"
BETA_HEADERS = f"{DOCS}/api/beta-headers"
DATA_RESIDENCY = f"{DOCS}/manage-claude/data-residency"

F = TypeVar("F", bound=Callable[..., Any])


def follows(page: str, behaviour: str) -> Callable[[F], F]:
    def mark(test: F) -> F:
        test.__doc_page__ = (page, behaviour)  # type: ignore[attr-defined]
        return test

    return mark
