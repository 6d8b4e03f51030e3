"""Another process rebuilding a SQLite file's WAL index, for as long as a test needs.

SQLite rebuilds the WAL index (the ``-shm`` file) when it finds its header torn,
as a writer that died between writing the header's two copies leaves it. While
it does, it holds the index's WRITE, CKPT and RECOVER locks, and every other
connection that starts a read gets SQLITE_BUSY (``SQLITE_BUSY_RECOVERY``). A real
rebuild lasts as long as the WAL takes to scan, far too briefly to test against,
so a child process takes the same locks and tears the header, exactly the state
SQLite's rebuild is in, and puts the header back when released. It must be a
child: POSIX locks never conflict within one process, and closing any
descriptor of the file here would drop the locks SQLite holds on it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

#: The child: take the locks, tear the header, say so, wait for stdin to close, mend it.
_RECOVERING = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
# The wal-index lock bytes start at offset 120: WRITE, CKPT, RECOVER, then the read marks.
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 3, 120)
header = os.pread(fd, 96, 0)  # two 48-byte copies of the wal-index header
torn = bytearray(header)
torn[16] ^= 0xFF  # mxFrame in the first copy only: the copies disagree
os.pwrite(fd, bytes(torn), 0)
print("recovering", flush=True)
sys.stdin.read()
os.pwrite(fd, header, 0)
"""


@asynccontextmanager
async def recovering_elsewhere(database: Path) -> AsyncIterator[None]:
    """While inside, another process is (as SQLite sees it) rebuilding ``database``'s WAL index.

    The file must be open in WAL mode (its ``-shm`` file exists) and idle.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RECOVERING,
        f"{database}-shm",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), 10)
        assert ready == b"recovering\n", ready
        yield
    finally:
        child.stdin.close()
        assert await asyncio.wait_for(child.wait(), 10) == 0
