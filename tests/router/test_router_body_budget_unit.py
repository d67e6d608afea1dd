"""Point 9: the budget of body bytes in flight, attacked with waits, timeouts and cancels."""

from __future__ import annotations

import asyncio

from tierwise.router.body import BYTES_PER_SEPARATOR, BodyBudget, body_charge


async def test_point9_budget_grants_in_order_and_never_overcommits() -> None:
    budget = BodyBudget(100)
    assert await budget.acquire(60, 1) == 60
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        assert await budget.acquire(size, 5) == size
        order.append(name)

    big = asyncio.create_task(take("big", 70))  # waits: only 40 free
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # fits, but may not overtake "big"
    await asyncio.sleep(0.01)
    assert order == [] and budget.free == 40
    budget.release(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and budget.free == 20


async def test_point9_a_wait_that_times_out_or_is_cancelled_gives_everything_back() -> None:
    budget = BodyBudget(100)
    held = await budget.acquire(100, 1)
    assert await budget.acquire(50, 0.05) is None  # timed out: the caller answers 429
    waiter = asyncio.create_task(budget.acquire(50, 5))
    await asyncio.sleep(0.01)
    waiter.cancel()  # the client went away while waiting
    await asyncio.gather(waiter, return_exceptions=True)
    budget.release(held)
    assert budget.free == 100
    assert await budget.acquire(100, 0.05) == 100  # nobody left in the queue holds a share


async def test_point9_a_body_larger_than_the_budget_is_capped_not_stuck() -> None:
    budget = BodyBudget(100)
    assert await budget.acquire(10_000, 0.05) == 100
    assert not budget.try_acquire(1)


def test_point9_many_small_values_are_charged_for_what_they_decode_to() -> None:
    text = b'{"messages": "' + b"x" * 10_000 + b'"}'
    assert body_charge(text) == len(text)
    values = b"[" + b'{"a":1},' * 1000 + b"1]"
    assert body_charge(values) == 3001 * BYTES_PER_SEPARATOR  # [ and each { : ,
