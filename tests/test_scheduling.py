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


async def test_capacity_holders_at_once_and_the_rest_round_robin() -> None:
    queue = FairQueue(capacity=3)
    inside = 0
    most = 0
    served: list[int] = []

    async def work(key: int) -> None:
        nonlocal inside, most
        async with queue.slot(key % 2):
            inside += 1
            most = max(most, inside)
            served.append(key)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(work(i) for i in range(12)))
    assert most == 3 and sorted(served) == list(range(12)) and queue.waiting == 0


async def test_each_waiter_is_told_its_place_as_it_moves() -> None:
    queue = FairQueue(capacity=1)
    release = {name: asyncio.Event() for name in ("a1", "a2", "a3", "b1")}
    places: dict[str, list[int]] = {name: [] for name in release}

    async def hold(key: str, name: str) -> None:
        async with queue.slot(key, on_place=places[name].append):
            await release[name].wait()

    first = asyncio.create_task(hold("a", "a1"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(hold(name[0], name)) for name in ("a2", "a3", "b1")]
    while queue.waiting < 3:
        await asyncio.sleep(0)
    # Round-robin per key: b's first request goes before a's third.
    assert places["a1"] == [] and [places[name][-1] for name in ("a2", "b1", "a3")] == [0, 1, 2]
    release["a1"].set()
    await first
    assert [places[name][-1] for name in ("b1", "a3")] == [0, 1]
    assert places["a3"] == [1, 2, 1]  # told again each time its place changed
    for event in release.values():
        event.set()
    await asyncio.gather(*tasks)
    assert queue.waiting == 0
