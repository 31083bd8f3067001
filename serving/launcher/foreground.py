"""Running a server in the foreground until Ctrl-C or SIGTERM (``towerserve serve``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from serving.launcher.process import TritonServer

log = logging.getLogger(__name__)


class _Shutdown(Exception):
    """Raised from the signal handler of :func:`run_foreground` before the server is ready."""


def run_foreground(
    repository: Path,
    *,
    ready_timeout_s: float = 300.0,
    on_ready: Callable[[TritonServer], None] | None = None,
    **server_kwargs: Any,
) -> int:
    """Run a server until Ctrl-C (SIGINT) or SIGTERM, then stop it cleanly.

    Args:
        repository: model repository folder.
        ready_timeout_s: seconds to wait for readiness (every model loaded).
        on_ready: called once the server is ready (e.g. to print a banner).
        server_kwargs: passed to :class:`TritonServer` (ports, host, binary, ...).

    Returns:
        0 after a requested stop; the server's own exit status (non-zero) if it died.

    Raises:
        TritonServerError, TimeoutError: it did not become ready (the log tail is in the
            message; the process is stopped).
    """
    if ready_timeout_s <= 0:
        raise ValueError(f"ready_timeout_s must be > 0 seconds, got {ready_timeout_s}")
    server = TritonServer(repository, **server_kwargs)
    # Until the server is ready a signal aborts the start at once (an exception); after that
    # it only sets ``stop``: an exception raised in the middle of ``Popen.poll`` can leave
    # the Popen's wait lock held, and the ``stop()`` that follows would then block forever.
    stop = threading.Event()
    ready = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if not ready:
            raise _Shutdown
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    old = (
        {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if in_main
        else {}
    )
    try:
        server.start()
        try:
            server.wait_ready(ready_timeout_s)
            ready = True
            log.info(
                "serving %s | gRPC %s | HTTP %s | metrics %s | Ctrl-C to stop",
                server.repository,
                server.url_grpc,
                server.url_http,
                server.url_metrics,
            )
            if on_ready is not None:
                on_ready(server)
            while server.is_running:
                if stop.wait(0.5):
                    log.info("tritonserver stopped on request")
                    return 0
            code = server.returncode
            log.error(
                "tritonserver exited on its own with status %s; last output:\n%s",
                code,
                server.log_tail(),
            )
            return code if code else 1
        finally:
            server.stop()  # whatever the reason: request, crash, startup error
    except (KeyboardInterrupt, _Shutdown):
        log.info("tritonserver stopped on request")
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
