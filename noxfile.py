"""Every check people runs, locally and in CI: `nox` runs the default sessions."""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck", "gen_check"]
# Use the Pythons this machine has; never fetch one. A missing one is skipped
# with a line saying so, except where CI is set: there nox's own default makes
# it an error, so CI cannot pass on fewer Pythons than it claims.
nox.options.download_python = "never"
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
GEN_OPTIONS = "server_generation=async,client_generation=async,google_protobuf_descriptors"


def _install(session: nox.Session, *groups: str, project: bool = True) -> None:
    requirements = [
        req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)
    ]
    if project:
        # With the otel extra, so the tracing tests and mypy see OpenTelemetry.
        session.install("-e", ".[otel]", *requirements)
    else:
        session.install(*requirements)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest arguments after --)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """Check formatting, lint rules and the dependency contracts between modules."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """Run mypy --strict over the package and the tests."""
    _install(session, "typecheck")
    session.run("mypy")


def _generate(session: nox.Session, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # The generator formats with the ruff on PATH and the ruff.toml nearest its
    # working directory, so it runs inside proto/ with the pinned ruff.
    with session.chdir(ROOT / "proto"):
        session.run(
            "python",
            "-m",
            "grpc_tools.protoc",
            "-I.",
            f"--python_betterproto2_out={out}",
            f"--python_betterproto2_opt={GEN_OPTIONS}",
            "people.proto",
        )


@nox.session(python=PYTHONS[0])
def gen(session: nox.Session) -> None:
    """Regenerate people/_gen from proto/people.proto."""
    _install(session, "gen", project=False)
    target = ROOT / "people" / "_gen"
    shutil.rmtree(target, ignore_errors=True)
    _generate(session, target)


@nox.session(python=PYTHONS[0])
def gen_check(session: nox.Session) -> None:
    """Fail if people/_gen differs from what proto/people.proto generates."""
    _install(session, "gen", project=False)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_gen"
        _generate(session, fresh)
        differences = _differences(fresh, ROOT / "people" / "_gen")
    if differences:
        session.error(
            "people/_gen is out of date; run `nox -s gen` and commit the result:\n  "
            + "\n  ".join(differences)
        )


def _differences(expected: Path, actual: Path) -> list[str]:
    found: list[str] = []
    names = {
        str(path.relative_to(root))
        for root in (expected, actual)
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for name in sorted(names):
        left, right = expected / name, actual / name
        if not (left.exists() and right.exists()):
            found.append(f"{name}: {'missing' if left.exists() else 'not generated'}")
        elif not filecmp.cmp(left, right, shallow=False):
            found.append(f"{name}: differs")
    return found


@nox.session(python=PYTHONS[0], default=False)
def bench(session: nox.Session) -> None:
    """Benchmark people serve against the seed's grpcio server (pass flags after --)."""
    if shutil.which("h2load") is None:
        session.error("bench needs h2load: apt-get install nghttp2-client")
    _install(session, "test")
    session.run("python", "bench/run.py", *session.posargs)
