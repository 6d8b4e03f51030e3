"""Exit codes of the `people` command, and the help text that lists them."""

from __future__ import annotations

from grpclib.const import Status

from people.api.status import status_for
from people.domain import errors

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: An import that reached the end of its file but rejected some lines.
EXIT_REJECTED_LINES = 3
#: A call that failed with gRPC status S exits with EXIT_STATUS_BASE + S.
EXIT_STATUS_BASE = 10

#: The statuses a person is likely to meet, with what they mean here.
_EXPLAINED_STATUSES = {
    Status.INVALID_ARGUMENT: "",
    Status.DEADLINE_EXCEEDED: "",
    Status.NOT_FOUND: "",
    Status.ALREADY_EXISTS: "",
    Status.PERMISSION_DENIED: "",
    Status.RESOURCE_EXHAUSTED: "",
    Status.ABORTED: " (stale etag)",
    Status.INTERNAL: "",
    Status.UNAVAILABLE: " (server unreachable)",
    Status.UNAUTHENTICATED: "",
}
EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}   success
  {EXIT_FAILURE}   a local problem (a file cannot be read or written)
  {EXIT_USAGE}   usage error
  {EXIT_REJECTED_LINES}   import reached the end of its file but rejected some lines
  {EXIT_STATUS_BASE}+ a call failed with gRPC status (exit code - {EXIT_STATUS_BASE}), among them:
""" + "".join(
    f"      {EXIT_STATUS_BASE + status.value} {status.name}{note}\n"
    for status, note in _EXPLAINED_STATUSES.items()
)


def exit_code(error: errors.PeopleError) -> int:
    """The exit code for a call that failed with ``error``: 10 + its gRPC status."""
    return EXIT_STATUS_BASE + status_for(error).value
