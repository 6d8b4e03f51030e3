"""Load with a different request on every call, so that no answer comes from the read cache.

h2load repeats one request body, which people then answers from its read cache.
The scenarios here measure the store behind the cache: each call sends a body
no earlier call of the scenario sent (every thread of every round walks a slice
of the bodies of its own), through grpcio's generic unary calls with bytes in
and out, from several client processes.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from people._gen.people import ListUsersRequest, UserIdRequest

#: Client processes at most (the machine has two cores; the server needs them too).
MAX_PROCESSES = 4
#: Distinct bodies prepared per scenario: more than all rounds together send.
BODIES = 200_000


def get_user_bodies(ids: list[str]) -> list[bytes]:
    """GetUserById for each id, in a random order.

    A GetUserById request has nothing else to vary: with fewer ids than calls,
    later calls repeat ids and may be answered from the cache (measure this
    scenario on a large directory, as the README's figures are).
    """
    shuffled = random.sample(ids, min(len(ids), BODIES))
    return [bytes(UserIdRequest(id=user_id)) for user_id in shuffled]


def email_bodies(users: int) -> list[bytes]:
    """ListUsers with `email = "userN@example.com"` for stored users, in a random order.

    Where there are fewer users than bodies needed, page sizes 1 to 50 (each page
    holds its one user) keep every body distinct.
    """
    numbers = random.sample(range(users), min(users, BODIES))
    return _shuffled_filters(numbers, lambda n: f'email = "user{n}@example.com"', smallest_page=1)


def name_prefix_bodies(users: int) -> list[bytes]:
    """ListUsers' first page of `name = "User N*"`, N with as many digits as the largest
    user number, so that each prefix matches one user whatever the directory's size.

    Page sizes 10 to 59 (each page holds its one user) make every body distinct
    even where there are fewer prefixes than calls.
    """
    digits = len(str(users - 1))
    low, high = 10 ** (digits - 1), users
    numbers = random.sample(range(low, high), min(high - low, BODIES))
    return _shuffled_filters(numbers, lambda n: f'name = "User {n}*"', smallest_page=10)


def _shuffled_filters(
    numbers: list[int], filter_for: Callable[[int], str], *, smallest_page: int
) -> list[bytes]:
    """A ListUsers body per number and page size (up to 50 sizes, so that few numbers
    still give enough distinct bodies), in a random order."""
    sizes = min(50, max(1, BODIES // len(numbers)))
    bodies = [
        bytes(ListUsersRequest(filter=filter_for(n), page_size=smallest_page + size))
        for size in range(sizes)
        for n in numbers
    ]
    return random.sample(bodies, len(bodies))


def slices(bodies: list[bytes], rounds: int, connections: int) -> list[list[list[bytes]]]:
    """For each round, a disjoint slice of ``bodies`` per connection."""
    size = max(1, len(bodies) // (rounds * connections))
    starts = [
        [((r * connections + c) * size) % len(bodies) for c in range(connections)]
        for r in range(rounds)
    ]
    return [[bodies[start : start + size] for start in row] for row in starts]


def _worker(args: tuple[int, str, list[list[bytes]], float]) -> tuple[int, int, list[float]]:
    port, method, per_thread, duration = args
    import grpc  # type: ignore[import-untyped]

    def run(bodies: list[bytes]) -> tuple[int, int, list[float]]:
        # A subchannel pool of its own gives each thread its own connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        latencies: list[float] = []
        failed = 0
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            call = channel.unary_unary(f"/people.UserService/{method}")
            end = time.monotonic() + duration
            index = 0
            while time.monotonic() < end:
                body = bodies[index % len(bodies)]
                index += 1
                started = time.perf_counter()
                try:
                    call(body, timeout=30)
                except grpc.RpcError:
                    failed += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
        return len(latencies), failed, latencies

    with ThreadPoolExecutor(len(per_thread)) as pool:
        results = list(pool.map(run, per_thread))
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        [x for r in results for x in r[2]],
    )


def distinct_load(
    port: int, method: str, per_connection: list[list[bytes]], duration: float
) -> tuple[int, int, float, list[float]]:
    """Drive ``method`` over one connection per slice; return (ok, failed, seconds, latencies)."""
    connections = len(per_connection)
    processes = min(connections, MAX_PROCESSES)
    jobs = [(port, method, per_connection[p::processes], duration) for p in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_worker, jobs)
    latencies = [x for r in results for x in r[2]]
    return sum(r[0] for r in results), sum(r[1] for r in results), duration, latencies
