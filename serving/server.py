"""`gradus serve`: the service under uvicorn, with a graceful shutdown: on SIGTERM/SIGINT the service first
says it is not ready (load balancers stop sending), waits serving.shutdown_delay_s, then uvicorn stops
accepting, finishes the requests in flight, and the workers drain their queues and the log is flushed."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from gradus.config.params import load_params
from serving.app import create_app


def run_service(params_file: Path, host: str | None = None, port: int | None = None,
                overrides: list[str] | None = None) -> None:
    """Serve the project whose params.yaml is `params_file` (registry and paths relative to its folder), with
    dotted overrides (serving.poll_interval_s=1) for this process only."""
    import uvicorn

    params = load_params(params_file, overrides or [])
    cfg = params.serving
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(params, params_file.resolve().parent)
    # Keep-alive longer than clients' and load balancers' idle timeouts (httpx 5 s, AWS ALB 60 s): the client
    # closes an idle connection first, so it never sends a request on one the service is closing (uvicorn's
    # default of 5 s equals httpx's, and that race showed as a rare ReadError under load).
    config = uvicorn.Config(app, host=host or cfg.host, port=port or cfg.port, access_log=False,
                            timeout_keep_alive=KEEP_ALIVE_S,
                            timeout_graceful_shutdown=int(cfg.request_timeout_s) + 5, log_level="info")
    GracefulServer(config, app.state.service, cfg.shutdown_delay_s).run()


KEEP_ALIVE_S = 75


class GracefulServer:
    """uvicorn.Server whose first exit signal only marks the service not ready, then exits after a delay."""

    def __init__(self, config: Any, service: Any, delay_s: float) -> None:
        import uvicorn

        outer = self

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                outer.begin_shutdown(lambda: super(_Server, self).handle_exit(sig, frame))

        self.server, self.service, self.delay_s = _Server(config), service, delay_s
        self._started = False

    def begin_shutdown(self, exit_now: Any) -> None:
        if self._started or self.delay_s <= 0:
            exit_now()  # a second signal, or no delay: exit at once
            return
        self._started = True
        self.service.accepting = False
        logging.getLogger("gradus.serving").info("shutting down: not ready; exiting in %.1fs", self.delay_s)
        threading.Timer(self.delay_s, exit_now).start()

    def run(self) -> None:
        self.server.run()
