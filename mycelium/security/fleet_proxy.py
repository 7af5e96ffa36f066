"""Only the Fleet API is public: an nginx front for a group's SuperLink.

Flower 1.42 serves Fleet (``/v1/fleet/*``), Control (``/v1/control/*``, unauthenticated in
open source), the runtime API (``/v1/runtime/*``, what ServerApps use), ``/health`` and
``/docs`` over HTTP on one ``--host/--port``; the old per-API address flags only apply to
the legacy gRPC servers, which 1.42 SuperNodes no longer speak. So the SuperLink binds
127.0.0.1 and this proxy (Debian's nginx, a child of the group host like its other
children) listens on the public address with the group's certificate and forwards only
``POST /v1/fleet/<name>`` to the SuperLink over TLS (verified against the SuperLink's
certificate). Everything else gets 404 from nginx and never reaches Flower. nginx matches
the *normalised* URI and forwards that same ``$uri``, so dot segments or encoded slashes
cannot smuggle a Control path past the match.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mycelium.procs import DeadlineExceeded, ManagedProcess, port_is_open, wait_for

logger = logging.getLogger(__name__)

FLEET_PATH_PATTERN = r"^/v1/fleet/[a-z][a-z-]*$"  # Flower's Fleet routes, nothing else
EXPOSED_PATHS = ("POST /v1/fleet/<route>",)
NGINX_READY_TIMEOUT = 15.0
NGINX_CHECK_TIMEOUT = 15.0
MAX_BODY_MB = 64  # the registry's model size limit; Flower pushes objects one by one


class FleetProxyError(RuntimeError):
    """The proxy could not be configured or started (message is one line)."""


@dataclass(frozen=True)
class FleetProxyConfig:
    """Where the proxy listens, what it presents, and the SuperLink it forwards to.

    ``upstream_name`` must be a DNS name in the SuperLink certificate's SANs: nginx checks
    the upstream's name against DNS SANs only (not IP SANs).
    """

    listen_host: str
    listen_port: int
    upstream_port: int
    certfile: Path
    keyfile: Path
    upstream_ca: Path
    upstream_name: str = "localhost"
    max_body_mb: int = MAX_BODY_MB

    @property
    def listen(self) -> str:
        host = self.listen_host
        return f"[{host}]:{self.listen_port}" if ":" in host else f"{host}:{self.listen_port}"


def render_nginx_conf(cfg: FleetProxyConfig, prefix: Path) -> str:
    """The whole nginx.conf for one proxy whose files live under ``prefix``."""
    p = Path(prefix).absolute()
    files = {"cert": cfg.certfile, "key": cfg.keyfile, "ca": cfg.upstream_ca}
    abs_files = {k: str(Path(v).absolute()) for k, v in files.items()}
    return f"""# Mycelium Net group front: only the Fleet API is public
daemon off;
master_process on;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server_tokens off;
    client_max_body_size {cfg.max_body_mb}m;
    server {{
        listen {cfg.listen} ssl;
        ssl_certificate {abs_files["cert"]};
        ssl_certificate_key {abs_files["key"]};
        ssl_protocols TLSv1.2 TLSv1.3;
        location ~ "{FLEET_PATH_PATTERN}" {{
            limit_except POST {{ deny all; }}
            proxy_pass https://127.0.0.1:{cfg.upstream_port}$uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_trusted_certificate {abs_files["ca"]};
            proxy_ssl_verify on;
            proxy_ssl_name {cfg.upstream_name};
            proxy_ssl_server_name on;
            # Stream both ways: nginx's workers (another user when started as root) never
            # touch a temp file, and a model's objects are not buffered twice.
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
        location / {{ return 404; }}
        # Plain HTTP to this TLS port: close without an answer (nginx would send a 400).
        error_page 497 = @plain;
        location @plain {{ return 444; }}
    }}
}}
"""


def nginx_executable() -> str:
    """Absolute path of nginx (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FleetProxyError("nginx not found (Debian: apt-get install nginx-light)")
    return found


class FleetProxy:
    """One nginx child serving :func:`render_nginx_conf` from ``work_dir``."""

    def __init__(self, cfg: FleetProxyConfig, work_dir: Path) -> None:
        self.cfg = cfg
        self.prefix = Path(work_dir).absolute() / "fleet-proxy"
        self._proc: ManagedProcess | None = None

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def start(self) -> FleetProxy:
        """Write and check the config, start nginx and wait until it listens."""
        nginx = nginx_executable()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_nginx_conf(self.cfg, self.prefix))
        self._check(nginx)
        args = [nginx, "-p", str(self.prefix), "-c", str(self.conf_path)]
        proc = ManagedProcess("fleet-proxy", args, log_path=self.prefix / "nginx.out")
        self._proc = proc.start()
        host, port = self.cfg.listen_host.strip("[]"), self.cfg.listen_port

        def ready() -> str | None:
            if not proc.is_running():
                return "exited"
            return "listening" if port_is_open(port, host=host) else None

        try:
            state = wait_for(ready, timeout=NGINX_READY_TIMEOUT, what=f"proxy on {self.cfg.listen}")
        except DeadlineExceeded as exc:
            state = str(exc)
        if state != "listening":
            self.stop()
            raise FleetProxyError(
                f"fleet proxy on {self.cfg.listen}: {state}; see {self.prefix}/error.log"
            )
        logger.info(
            "fleet proxy %s -> 127.0.0.1:%s (pid %s)",
            self.cfg.listen,
            self.cfg.upstream_port,
            self.pid,
        )
        return self

    def _check(self, nginx: str) -> None:
        """``nginx -t``: a bad certificate or address is a one-line error before start."""
        try:
            proc = subprocess.run(
                [nginx, "-t", "-q", "-p", str(self.prefix), "-c", str(self.conf_path)],
                capture_output=True,
                text=True,
                timeout=NGINX_CHECK_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise FleetProxyError("nginx -t did not finish") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "[emerg]" in ln] or [proc.stderr]
            raise FleetProxyError(f"nginx refused the proxy config: {lines[0].strip()[:300]}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            self._proc.stop(timeout=timeout)
