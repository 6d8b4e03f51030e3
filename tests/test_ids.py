"""New user ids are random version-4 UUIDs, never repeated, also across a fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor

from people.domain.ids import new_user_id


class TestNewUserId:
    def test_canonical_version_4(self) -> None:
        """Each id is a UUID's canonical text, version 4, RFC 4122 variant."""
        for _ in range(600):  # past two blocks
            text = new_user_id()
            parsed = uuid.UUID(text)
            assert str(parsed) == text
            assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)

    def test_no_repeats_across_threads(self) -> None:
        """Ids drawn from eight threads at once are all different."""
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: new_user_id(), range(20_000)))
        assert len(set(ids)) == len(ids)

    def test_a_forked_child_draws_its_own(self) -> None:
        """A child forked mid-block does not hand out the ids its parent will."""
        # Forked in a fresh interpreter: a fork of the test process, threads and all,
        # is what Python warns against.
        script = textwrap.dedent(
            """
            import os
            from people.domain.ids import new_user_id

            new_user_id()  # a block is open, with ids left in it
            reading, writing = os.pipe()
            child = os.fork()
            if child == 0:
                os.write(writing, " ".join(new_user_id() for _ in range(10)).encode())
                os._exit(0)
            os.close(writing)
            os.waitpid(child, 0)
            with os.fdopen(reading) as pipe:
                print(pipe.read())
            print(" ".join(new_user_id() for _ in range(10)))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        from_child, from_parent = (set(line.split()) for line in result.stdout.splitlines())
        assert len(from_child) == len(from_parent) == 10
        assert not from_child & from_parent
