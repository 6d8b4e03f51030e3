"""Build the yardstick: the seed's own grpcio server and stubs, from the seed notebook.

The seed is the reference people is measured against, not part of the product.
Its proto and server code are cut out of the notebook kept in tests/seed/ and
written to bench/_build/; the only change is the listening address.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "seed" / "000_429682d8b024c27e.txt"
BUILD = ROOT / "bench" / "_build"


def _between(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin) + len(end)]


def build() -> Path:
    """Write the seed's proto, generated stubs and server to bench/_build; return the folder."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    text = NOTEBOOK.read_text(encoding="utf-8")
    BUILD.mkdir(parents=True, exist_ok=True)
    start = text.index("// Protocol Buffer revision specification")
    end = text.index("\n}", text.index("service UserService", start)) + 2
    proto = text[start:end] + "\n"
    (BUILD / "people.proto").write_text(proto, encoding="utf-8")
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{BUILD}",
            f"-I{include}",
            f"--python_out={BUILD}",
            f"--grpc_python_out={BUILD}",
            str(BUILD / "people.proto"),
        ]
    )
    if code != 0:
        raise SystemExit("protoc failed on the seed's proto")
    server = _between(text, "import grpc\nimport uuid", "serve() # Run the server when executed")
    # The one change: listen where the benchmark says, not on a fixed port.
    server = server.replace(
        '"[::]:50051"', "f\"127.0.0.1:{__import__('os').environ['SEED_PORT']}\""
    )
    (BUILD / "seed_server.py").write_text(server + "\n", encoding="utf-8")
    return BUILD


if __name__ == "__main__":
    print(build(), file=sys.stderr)
