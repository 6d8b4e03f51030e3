"""Benchmark `people serve` against the seed's grpcio server, in the same run.

Both servers get the same users and the same load, scenario by scenario, with
the two servers interleaved over several rounds so that drift in the machine
hits both alike. Fixed-body calls are driven by h2load (C, so the client costs
little CPU); CreateUser, whose bodies must differ, by grpcio in several
processes. Each figure is the median over rounds; ratios are people / seed.

With two or more CPUs the servers are pinned to CPU 0 (one core is the seed's
best: its thread pool gains nothing from a second under the GIL) and everything
that generates load to CPU 1, so a server never competes with its own load;
a people server with `--workers` above 1 gets both CPUs, and shares CPU 1 with
the load.
`--variant NAME=FLAGS` adds another `people serve` with extra flags to the same
run, for the cost of a feature (`--variant "metrics=--metrics-address
127.0.0.1:{port}"`; `{port}` becomes a free port).

Run it with `nox -s bench` (or `python bench/run.py --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distinct
import import_time
import seed

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READ_SCENARIOS = ("GetUserById", "GetAllUsers", "ListUsers")
#: Scenarios whose every call sends a new body (so none is answered from the read
#: cache), with the RPC each calls; people only (the seed has no ListUsers filter).
DISTINCT_SCENARIOS = {
    "GetUserByIdDistinct": "GetUserById",
    "ListUsersByEmail": "ListUsers",
    "ListUsersByNamePrefix": "ListUsers",
}
ORDER = [
    "GetUserById",
    "CreateUser",
    "GetAllUsers",
    "ListUsers",
    "GetUserByIdDistinct",
    "ListUsersByEmail",
    "ListUsersByNamePrefix",
]


@dataclass
class Measurement:
    """One server under one scenario at one concurrency, in one round."""

    server: str
    scenario: str
    connections: int
    round: int
    requests: int
    failures: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_call: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (workers included)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return total


def rss_mib(pid: int) -> float:
    """Largest peak resident set (VmHWM) among a process and its direct children, in MiB."""
    pids = [pid]
    with contextlib.suppress(FileNotFoundError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    sizes = []
    for current in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    sizes.append(int(line.split()[1]) / 1024)
    return max(sizes, default=0.0)


def wait_ready(port: int, timeout: float = 30) -> None:
    import grpc  # type: ignore[import-untyped]

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


#: The CPU servers run on, and the CPUs load generators run on, when pinned.
SERVER_CPUS = {0}
LOAD_CPUS = {1}


def pin(process: subprocess.Popen[bytes], cpus: set[int] | None) -> None:
    """Keep ``process`` (and the workers it starts later) on ``cpus``; None leaves it free."""
    if cpus is not None:
        os.sched_setaffinity(process.pid, cpus)


def people_cpus(flags: list[str], server_cpus: set[int] | None) -> set[int] | None:
    """Where a people server runs: with several workers, on every CPU, the load's too."""
    workers = flags[flags.index("--workers") + 1] if "--workers" in flags else "1"
    if server_cpus is None or workers == "1":
        return server_cpus
    return server_cpus | LOAD_CPUS


@contextlib.contextmanager
def seed_server(
    build: Path, cpus: set[int] | None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "seed_server.py"],
        cwd=build,
        env={**os.environ, "SEED_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pin(process, cpus)
    try:
        wait_ready(port)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def people_server(
    database: Path, extra: list[str], cpus: set[int] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    people = Path(sys.executable).parent / "people"
    process = subprocess.Popen(
        [
            str(people),
            "serve",
            "--port",
            str(port),
            "--database",
            f"sqlite:///{database}",
            "--no-access-log",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pin(process, cpus)
    try:
        wait_ready(port)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=60)


def stubs(build: Path) -> tuple[Any, Any]:
    sys.path.insert(0, str(build))
    import people_pb2  # type: ignore[import-not-found]
    import people_pb2_grpc  # type: ignore[import-not-found]

    return people_pb2, people_pb2_grpc


def load_users(port: int, count: int, pb2: Any, pb2_grpc: Any) -> list[str]:
    """Create ``count`` users through the API; return their ids."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.UserServiceStub(channel)

        def create(i: int) -> str:
            request = pb2.CreateUserRequest(name=f"User {i}", email=f"user{i}@example.com")
            return str(stub.CreateUser(request, timeout=30).id)

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(create, range(count)))


def prefill_sqlite(database: Path, count: int) -> list[str]:
    """Write ``count`` users straight into a people SQLite file, as the store would (same
    schema, migrations and keys), named and addressed like load_users'; return their ids."""
    from people.store import sqlite as people_sqlite
    from people.store.sqlite_schema import migrate

    db = sqlite3.connect(database, isolation_level=None)
    migrate(db)
    now = int(time.time() * 1_000_000)
    ids = []
    batch = []
    db.execute("BEGIN")
    for i in range(count):
        user_id = str(uuid.uuid4())
        ids.append(user_id)
        email = f"user{i}@example.com"
        name = f"User {i}"
        row = (user_id, name, email, email, 1, now + i, now + i, name.casefold(), email[::-1])
        batch.append(row)
        if len(batch) == 10_000 or i == count - 1:
            db.executemany(people_sqlite._INSERT, batch)
            batch.clear()
    db.execute("COMMIT")
    db.close()
    return ids


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(
    port: int, method: str, body: bytes, connections: int, duration: float
) -> tuple[int, int, float, list[float]]:
    """Drive one fixed-body unary method; return (ok, failed, seconds, latencies in ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file, log_file = Path(tmp) / "body", Path(tmp) / "log"
        body_file.write_bytes(grpc_frame(body))
        started = time.monotonic()
        subprocess.run(
            [
                shutil.which("h2load") or "h2load",
                "-D",
                f"{int(duration * 1000)}ms",
                "-c",
                str(connections),
                "-m",
                "1",
                "-t",
                "1",
                "-d",
                str(body_file),
                "--log-file",
                str(log_file),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                f"http://127.0.0.1:{port}/people.UserService/{method}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=duration + 60,
        )
        seconds = time.monotonic() - started
        latencies, failed = [], 0
        for line in log_file.read_text().splitlines():
            _, status, micros = line.split("\t")[:3]
            if status == "200":
                latencies.append(int(micros) / 1000)
            else:
                failed += 1
    return len(latencies), failed, min(seconds, duration), latencies


def _create_worker(args: tuple[int, int, float, str, str]) -> tuple[int, int, list[float]]:
    port, threads, duration, tag, build = args
    import grpc

    pb2, pb2_grpc = stubs(Path(build))

    def run(thread: int) -> tuple[int, int, list[float]]:
        # A subchannel pool of its own gives each thread its own connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        latencies, failed, i = [], 0, 0
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = pb2_grpc.UserServiceStub(channel)
            end = time.monotonic() + duration
            while time.monotonic() < end:
                i += 1
                email = f"bench-{tag}-{thread}-{i}@example.com"
                started = time.perf_counter()
                try:
                    stub.CreateUser(pb2.CreateUserRequest(name="Bench", email=email), timeout=30)
                except grpc.RpcError:
                    failed += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
        return len(latencies), failed, latencies

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(run, range(threads)))
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        [x for r in results for x in r[2]],
    )


def create_load(
    port: int, connections: int, duration: float, build: Path
) -> tuple[int, int, float, list[float]]:
    """CreateUser with distinct emails from several client processes."""
    processes = min(connections, 4)
    per_process = [
        connections // processes + (i < connections % processes) for i in range(processes)
    ]
    tag = uuid.uuid4().hex[:8]
    jobs = [(port, n, duration, f"{tag}{i}", str(build)) for i, n in enumerate(per_process)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_create_worker, jobs)
    latencies = [x for r in results for x in r[2]]
    return sum(r[0] for r in results), sum(r[1] for r in results), duration, latencies


def check_grpc_ok(port: int, pb2: Any, pb2_grpc: Any, some_id: str, scenarios: list[str]) -> None:
    """h2load sees only HTTP status; check grpc-status is OK on a sample of each call."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.UserServiceStub(channel)
        for _ in range(5):
            stub.GetUserById(pb2.UserIdRequest(id=some_id), timeout=30)
            if "GetAllUsers" in scenarios:  # refused, rightly, past ~30,000 users
                stub.GetAllUsers(pb2.Empty(), timeout=60)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(
    server: str,
    port: int,
    pid: int,
    scenario: str,
    connections: int,
    round_: int,
    args: argparse.Namespace,
    bodies: dict[str, bytes],
    build: Path,
    distinct_bodies: dict[str, list[bytes]],
) -> Measurement:
    cpu_before = cpu_seconds(pid)
    if scenario == "CreateUser":
        ok, failed, seconds, latencies = create_load(port, connections, args.duration, build)
    elif scenario in DISTINCT_SCENARIOS:
        slices = distinct.slices(distinct_bodies[scenario], args.rounds, connections)[round_]
        ok, failed, seconds, latencies = distinct.distinct_load(
            port, DISTINCT_SCENARIOS[scenario], slices, args.duration
        )
    else:
        ok, failed, seconds, latencies = h2load(
            port, scenario, bodies[scenario], connections, args.duration
        )
    cpu = cpu_seconds(pid) - cpu_before
    return Measurement(
        server=server,
        scenario=scenario,
        connections=connections,
        round=round_,
        requests=ok,
        failures=failed,
        seconds=seconds,
        rps=ok / seconds,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        cpu_us_per_call=cpu / max(ok, 1) * 1e6,
    )


def summarise(results: list[Measurement], servers: list[str]) -> list[dict[str, Any]]:
    """Medians per scenario, concurrency and server; each people server's ratio to the seed."""
    rows: list[dict[str, Any]] = []
    keys = sorted(
        {(m.scenario, m.connections) for m in results},
        key=lambda k: (ORDER.index(k[0]), k[1]),
    )
    for scenario, connections in keys:
        row: dict[str, Any] = {"scenario": scenario, "connections": connections}
        for server in servers:
            runs = [
                m
                for m in results
                if (m.server, m.scenario, m.connections) == (server, scenario, connections)
            ]
            if not runs:
                continue
            row[server] = {
                "rps": statistics.median(m.rps for m in runs),
                "p50_ms": statistics.median(m.p50_ms for m in runs),
                "p99_ms": statistics.median(m.p99_ms for m in runs),
                "cpu_us_per_call": statistics.median(m.cpu_us_per_call for m in runs),
                "failures": sum(m.failures for m in runs),
            }
            if server != "seed" and "seed" in row:
                row[server]["ratio"] = row[server]["rps"] / row["seed"]["rps"]
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], servers: list[str]) -> None:
    """One line per scenario and concurrency: each server's req/s, latency, CPU and ratio."""
    header = f"{'scenario':<21} {'conns':>5}"
    for server in servers:
        header += f" | {server + ' req/s':>14} {'p50':>7} {'p99':>7} {'cpu/call':>8}"
        if server != "seed":
            header += f" {'ratio':>5}"
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['scenario']:<21} {row['connections']:>5}"
        for server in servers:
            data = row.get(server)
            if data is None:
                line += f" | {'-':>14} {'':>7} {'':>7} {'':>8}"
            else:
                line += (
                    f" | {data['rps']:>14.0f} {data['p50_ms']:>6.2f}m {data['p99_ms']:>6.2f}m"
                    f" {data['cpu_us_per_call']:>6.0f}us"
                )
            if server != "seed":
                ratio = (data or {}).get("ratio")
                line += f" {ratio:>5.2f}" if ratio is not None else f" {'-':>5}"
        print(line)


def measure_imports(args: argparse.Namespace) -> list[float]:
    """Seconds of `people import` of ``--import-lines`` CSV lines, once per round."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "users.csv"
        import_time.write_csv(source, args.import_lines)
        seconds = []
        for round_ in range(args.rounds):
            took = import_time.time_import(
                source,
                args.import_lines,
                lambda database: people_server(database, args.people_args.split()),
            )
            print(f"  people import of {args.import_lines:,} lines, round {round_}: {took:.1f} s")
            seconds.append(took)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", default="1,64", help="comma-separated (default 1,64)")
    parser.add_argument("--users", type=int, default=1000, help="users stored before reads")
    parser.add_argument(
        "--scenarios",
        default="GetUserById,CreateUser,GetAllUsers,ListUsers",
        help="comma-separated, among " + ", ".join([*ORDER, "Import"]),
    )
    parser.add_argument(
        "--import-lines", type=int, default=100_000, help="CSV lines of the Import scenario"
    )
    parser.add_argument("--people-args", default="", help="extra `people serve` flags")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="another `people serve` with these extra flags ({port}: a free port); repeatable",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="servers on CPU 0, load on CPU 1 (default: with two or more CPUs)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        print("bench: h2load not found; install Debian's nghttp2-client", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",")]
    server_cpus = SERVER_CPUS if args.pin else None
    if args.pin:
        os.sched_setaffinity(0, LOAD_CPUS)  # h2load and the client processes inherit it
    people_flags = {"people": args.people_args.split()}
    for variant in args.variant:
        name, _, flags = variant.partition("=")
        people_flags[name] = [
            flag.replace("{port}", str(free_port()))
            for flag in (args.people_args + " " + flags).split()
        ]
    scenarios = [s for s in args.scenarios.split(",") if s]
    # The seed keeps users in a dict and can only be filled through its API;
    # past 10,000 users the million-user check measures people alone, and so
    # do the scenarios the seed cannot serve.
    with_seed = args.users <= 10_000 and any(s in ORDER[:3] for s in scenarios)
    build = seed.build()
    pb2, pb2_grpc = stubs(build)
    results: list[Measurement] = []
    imports: list[float] = []
    if "Import" in scenarios:
        scenarios.remove("Import")
        imports = measure_imports(args)
        if not scenarios:
            median = statistics.median(imports)
            print(
                f"people import of {args.import_lines:,} CSV lines into SQLite: median"
                f" {median:.1f} s ({args.import_lines / median:,.0f} lines/s)"
            )
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps({"import_lines": args.import_lines, "import_seconds": imports})
            )
            return 0
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        servers: dict[str, tuple[int, int]] = {}
        ids: dict[str, str] = {}
        distinct_bodies: dict[str, dict[str, list[bytes]]] = {}
        for name, flags in people_flags.items():
            # Each people server has a database of its own, filled the same way.
            database = tmp / f"{name}.db"
            prefilled = prefill_sqlite(database, args.users) if not with_seed else []
            port, process = stack.enter_context(
                people_server(database, flags, people_cpus(flags, server_cpus))
            )
            servers[name] = (port, process.pid)
            people_ids = prefilled or load_users(port, args.users, pb2, pb2_grpc)
            ids[name] = people_ids[0]
            distinct_bodies[name] = {
                "GetUserByIdDistinct": distinct.get_user_bodies(people_ids),
                "ListUsersByEmail": distinct.email_bodies(args.users),
                "ListUsersByNamePrefix": distinct.name_prefix_bodies(args.users),
            }
        if with_seed:
            port, process = stack.enter_context(seed_server(build, server_cpus))
            servers["seed"] = (port, process.pid)
            ids["seed"] = load_users(port, args.users, pb2, pb2_grpc)[0]
        for name, (port, _) in servers.items():
            check_grpc_ok(port, pb2, pb2_grpc, ids[name], scenarios)
        # CreateUser goes last so the read scenarios always see `--users` users.
        ordered = [s for s in scenarios if s != "CreateUser"] + (
            ["CreateUser"] if "CreateUser" in scenarios else []
        )
        for scenario in ordered:
            for conns in connections:
                for round_ in range(args.rounds):
                    order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                    for name in order:
                        if name == "seed" and (
                            scenario == "ListUsers" or scenario in DISTINCT_SCENARIOS
                        ):
                            continue  # the seed has no ListUsers
                        port, pid = servers[name]
                        bodies = {
                            "GetUserById": bytes(
                                pb2.UserIdRequest(id=ids[name]).SerializeToString()
                            ),
                            "GetAllUsers": b"",
                            "ListUsers": b"\x08\x64",  # ListUsersRequest{page_size: 100}
                        }
                        m = measure(
                            name,
                            port,
                            pid,
                            scenario,
                            conns,
                            round_,
                            args,
                            bodies,
                            build,
                            distinct_bodies.get(name, {}),
                        )
                        results.append(m)
                        print(
                            f"  {name:<6} {scenario:<12} c={conns:<3} round {round_}: "
                            f"{m.rps:8.0f} req/s p99 {m.p99_ms:7.2f} ms "
                            f"({m.failures} failed)",
                            flush=True,
                        )
        memory = {name: rss_mib(pid) for name, (_, pid) in servers.items()}
    names = sorted(servers, key=lambda name: name != "seed")  # the seed first
    rows = summarise(results, names)
    print()
    print(
        f"users stored: {args.users}; {args.rounds} rounds x {args.duration:g}s; "
        f"pinned: {'servers CPU 0 (several workers: both), load CPU 1' if args.pin else 'no'}; "
        + "; ".join(
            f"{name}: {' '.join(flags) or '(defaults)'}" for name, flags in people_flags.items()
        )
    )
    print_table(rows, names)
    print("peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    if imports:
        print(
            f"people import of {args.import_lines:,} CSV lines into SQLite: "
            + ", ".join(f"{seconds:.1f} s" for seconds in imports)
            + f" (median {statistics.median(imports):.1f} s,"
            f" {args.import_lines / statistics.median(imports):,.0f} lines/s)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "users": args.users,
                "rounds": args.rounds,
                "duration": args.duration,
                "people_args": args.people_args,
                "variants": people_flags,
                "pinned": args.pin,
                "rss_mib": memory,
                "summary": rows,
                "import_seconds": imports,
                "import_lines": args.import_lines,
                "measurements": [asdict(m) for m in results],
            },
            indent=2,
        )
    )
    print(f"results written to {args.json}")
    failures = sum(m.failures for m in results)
    if failures:
        print(f"bench: {failures} calls failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
