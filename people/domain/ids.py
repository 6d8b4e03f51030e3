"""New user ids: random UUIDs (version 4), drawn from the OS's CSPRNG in blocks.

``uuid.uuid4()`` asks the kernel for 16 bytes on every call; each such system
call releases the GIL, and on a busy server getting it back means waiting for
the SQLite writer thread, which made id generation a tenth of the event loop's
time under a create load. Reading 4 KiB at once gives the same bytes from the
same source, one system call per 256 ids. A forked child starts with an empty
block, so no two processes ever hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

_IDS_PER_READ = 256
_block = b""
_offset = 0
_lock = threading.Lock()


def _forget_block() -> None:
    global _block, _offset, _lock
    _block, _offset, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_block)


def new_user_id() -> str:
    """A fresh random UUID in its canonical text form, as ``str(uuid.uuid4())``."""
    global _block, _offset
    with _lock:
        if _offset >= len(_block):
            _block, _offset = os.urandom(16 * _IDS_PER_READ), 0
        raw = _block[_offset : _offset + 16]
        _offset += 16
    return str(uuid.UUID(bytes=raw, version=4))
