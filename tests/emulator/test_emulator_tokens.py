"""The token approximation and prompt layout (pure)."""

from __future__ import annotations

from tierwise.emulator.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    Breakpoint,
    canonical_json,
    count_prompt_tokens,
    layout_prompt,
    text_tokens,
)


def test_text_tokens_round_up_at_four_characters() -> None:
    assert [text_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_string_and_block_content_count_the_same() -> None:
    as_string = {"messages": [{"role": "user", "content": "a" * 40}]}
    as_blocks = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 40}]}]}
    assert count_prompt_tokens(as_string) == count_prompt_tokens(as_blocks) == 10 + 3


def test_every_section_counts() -> None:
    tool = {"name": "lookup", "description": "find", "input_schema": {"type": "object"}}
    body = {
        "tools": [tool],
        "system": "s" * 8,
        "messages": [
            {"role": "user", "content": "u" * 12},
            {"role": "assistant", "content": "a" * 4},
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]},
        ],
    }
    expected = (
        text_tokens(canonical_json(tool)) + 2 + 3 + 1 + IMAGE_TOKENS + 3 * MESSAGE_OVERHEAD_TOKENS
    )
    assert count_prompt_tokens(body) == expected


def test_cache_control_does_not_change_the_count() -> None:
    plain = {
        "system": [{"type": "text", "text": "x" * 100}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    marked = {
        "system": [{"type": "text", "text": "x" * 100, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert count_prompt_tokens(plain) == count_prompt_tokens(marked)


def test_layout_boundaries_are_cumulative_and_end_at_the_total() -> None:
    body = {
        "system": [{"type": "text", "text": "x" * 400, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "y" * 40}],
    }
    layout = layout_prompt(body)
    assert layout.boundaries == (100, 113)
    assert layout.total_tokens == count_prompt_tokens(body) == 113
    assert layout.breakpoints == (Breakpoint(0, "5m"),)
    assert len(layout.keys) == 2


def test_no_breakpoints_means_no_hashing() -> None:
    layout = layout_prompt({"messages": [{"role": "user", "content": "hello"}]})
    assert layout.keys == () and layout.breakpoints == ()


def test_prefix_keys_identify_exact_prefixes() -> None:
    def body(system: str, question: str) -> dict:
        return {
            "system": [
                {
                    "type": "text",
                    "text": system,
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
            "messages": [{"role": "user", "content": question}],
        }

    a, b, c = (
        layout_prompt(body("S", "q1")),
        layout_prompt(body("S", "q2")),
        layout_prompt(body("T", "q1")),
    )
    assert a.keys[0] == b.keys[0]  # same prefix up to the breakpoint
    assert a.keys[1] != b.keys[1]
    assert a.keys[0] != c.keys[0]
    assert a.breakpoints == (Breakpoint(0, "1h"),)


def test_role_is_part_of_the_prefix() -> None:
    def body(role: str) -> dict:
        return {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": role,
                    "content": [
                        {"type": "text", "text": "same", "cache_control": {"type": "ephemeral"}}
                    ],
                },
            ]
        }

    assert layout_prompt(body("user")).keys[-1] != layout_prompt(body("assistant")).keys[-1]


def test_top_level_cache_control_marks_the_last_block() -> None:
    body = {
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
        "system": "sys",
        "messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}],
    }
    assert layout_prompt(body).breakpoints == (Breakpoint(2, "1h"),)
