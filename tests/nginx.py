"""A real nginx for tests, configured with the recipe of docs/deploy.md.

The recipe (the ``nginx`` block after ``<!-- nginx-config -->`` in
docs/deploy.md) is what operators copy; the tests run exactly that text, with
only its ``listen`` port and its ``server`` lines replaced by the test's own.
nginx runs in the foreground (``daemon off``) with a master and one worker, in
its own process group and a temporary directory that holds its pid file, logs
and temp paths; stopping it kills the whole group, so no worker outlives a test,
and a test process that dies takes nginx with it (``setpriv --pdeathsig``).

Without nginx the tests that need it are skipped, unless
``PEOPLE_REQUIRE_NGINX=1`` is set (CI sets it): then they fail, loudly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "PEOPLE_REQUIRE_NGINX"
#: Where Debian's ``nginx`` package installs the binary (/usr/sbin is not always on PATH).
DEBIAN_NGINX = Path("/usr/sbin/nginx")
DEPLOY_DOC = Path(__file__).parents[1] / "docs" / "deploy.md"
CONFIG_MARKER = "<!-- nginx-config -->"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

#: The recipe's replica lines (``server HOST:50051 PARAMS;``) and its listener.
UPSTREAM_SERVER = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+\S+:50051(?P<params>[^;\n]*);", re.M)
LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen[ \t]+8080[ \t]+http2;", re.M)

#: nginx's own main context around the recipe: everything lives under ``{root}``.
MAIN_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log {log_level};

events {{
    worker_connections 1024;
}}

http {{
    log_format people '$status $request_uri upstream=$upstream_addr '
                      'upstream_status=$upstream_status time=$request_time';
    access_log {root}/access.log people;
    client_body_temp_path {root}/temp/client_body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;

{site}
}}
"""


class NginxUnavailable(RuntimeError):
    """nginx is not installed, or refused the configuration."""


def nginx_binary() -> Path:
    """The nginx executable.

    Raises:
        NginxUnavailable: nginx is not installed.
    """
    found = shutil.which("nginx")
    if found is not None:
        return Path(found)
    if DEBIAN_NGINX.exists():
        return DEBIAN_NGINX
    raise NginxUnavailable("nginx is not installed (apt-get install nginx)")


def nginx_required() -> bool:
    """True when a missing nginx must fail the tests instead of skipping them."""
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def require_nginx() -> Path:
    """The nginx executable; skip the current test without it, or fail when nginx is required."""
    try:
        return nginx_binary()
    except NginxUnavailable as exc:
        if nginx_required():
            pytest.fail(f"{REQUIRE_VARIABLE} is set but nginx is unavailable: {exc}")
        pytest.skip(f"nginx is unavailable: {exc}")


def recommended_site(doc: Path = DEPLOY_DOC) -> str:
    """The nginx recipe of docs/deploy.md, as operators copy it."""
    text = doc.read_text(encoding="utf-8")
    _, marker, after = text.partition(CONFIG_MARKER)
    assert marker, f"{doc} has no {CONFIG_MARKER} marker"
    block = re.match(r"\s*```nginx\n(?P<body>.*?)\n```", after, re.S)
    assert block is not None, f"no ```nginx block follows {CONFIG_MARKER} in {doc}"
    return block["body"]


def site_for(site: str, *, listen_port: int, replica_ports: Sequence[int]) -> str:
    """``site`` listening on ``127.0.0.1:listen_port``, with one upstream server per replica.

    Every replica line keeps the parameters (``max_fails=0`` ...) of the recipe's first one.
    """
    servers = list(UPSTREAM_SERVER.finditer(site))
    assert servers, "the nginx recipe names no `server HOST:50051 ...;`"
    indent, params = servers[0]["indent"], servers[0]["params"]
    replicas = "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in replica_ports)
    site = site[: servers[0].start()] + replicas + site[servers[-1].end() :]
    site, listens = LISTEN.subn(rf"\g<indent>listen 127.0.0.1:{listen_port} http2;", site)
    assert listens == 1, "the nginx recipe must have exactly one `listen 8080 http2;`"
    return site


class NginxProxy:
    """One nginx (master and worker) in a temporary directory.

    Args:
        root: An empty directory nginx may own.
        site: The ``http`` context lines (upstreams and servers) to serve.
        log_level: The error log's level (``debug`` works: Debian builds --with-debug).
    """

    def __init__(self, root: Path, site: str, *, log_level: str = "info") -> None:
        self.root = root
        self.config = root / "nginx.conf"
        self.config.write_text(MAIN_CONFIG.format(root=root, site=site, log_level=log_level))
        (root / "temp").mkdir()
        self.process: subprocess.Popen[bytes] | None = None

    def check(self, binary: Path) -> None:
        """Run ``nginx -t`` on the configuration.

        Raises:
            NginxUnavailable: nginx rejects it.
        """
        checked = subprocess.run(
            [str(binary), "-t", "-p", str(self.root), "-c", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT,
        )
        if checked.returncode != 0:
            raise NginxUnavailable(f"nginx -t failed:\n{checked.stderr}")

    def start(self, binary: Path, port: int) -> None:
        """Start nginx in its own process group and wait until ``port`` accepts connections.

        Where util-linux's ``setpriv`` exists, nginx's master also gets SIGTERM
        (a fast shutdown, workers included) if the test process dies before its
        ``finally`` could stop it.
        """
        setpriv = shutil.which("setpriv")
        guard = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
        self.process = subprocess.Popen(
            [*guard, str(binary), "-p", str(self.root), "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise NginxUnavailable(f"nginx exited at start:\n{self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise NginxUnavailable(f"nginx did not listen:\n{self.error_log()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop nginx's whole process group (master and workers), killing it if it lingers."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # A worker whose master died first would still be in the group.
        _signal_group(process.pid, signal.SIGKILL)

    def error_log(self) -> str:
        """Everything nginx logged to its error log so far."""
        log = self.root / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def access_log(self) -> list[str]:
        """One line per proxied call: status, path, upstream(s) tried and their statuses."""
        log = self.root / "access.log"
        return log.read_text(errors="replace").splitlines() if log.exists() else []


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


@contextmanager
def running_nginx(site: str, port: int, *, log_level: str = "info") -> Iterator[NginxProxy]:
    """Check ``site`` with ``nginx -t``, run nginx with it on ``port``, stop it and clean up.

    Skips the test when nginx is missing (fails it under ``PEOPLE_REQUIRE_NGINX=1``).
    """
    binary = require_nginx()
    root = Path(tempfile.mkdtemp(prefix="people-nginx-"))
    # As root, nginx's worker runs as nobody and must reach its temp paths.
    root.chmod(0o755)
    proxy = NginxProxy(root, site, log_level=log_level)
    try:
        proxy.check(binary)
        proxy.start(binary, port)
        yield proxy
    finally:
        proxy.stop()
        shutil.rmtree(root, ignore_errors=True)
