import asyncio

from core.scheduling import FairQueue


async def test_a_cancelled_waiter_does_not_block_the_queue() -> None:
    queue = FairQueue()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str) -> None:
        async with queue.slot(key):
            order.append(key)
            await release.wait()

    first = asyncio.create_task(hold("a"))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(hold("b"))
    last = asyncio.create_task(hold("c"))
    while queue.waiting < 2:
        await asyncio.sleep(0)
    doomed.cancel()
    release.set()
    await asyncio.gather(first, last)
    assert order == ["a", "c"] and queue.waiting == 0


async def test_one_holder_at_a_time() -> None:
    queue = FairQueue()
    inside = 0
    most = 0

    async def work(key: int) -> None:
        nonlocal inside, most
        async with queue.slot(key % 3):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(work(i) for i in range(20)))
    assert most == 1
