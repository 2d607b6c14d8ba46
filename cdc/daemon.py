"""Runs the configured pipelines, each in its own thread, until asked to stop.

A pipeline that fails with a retryable error (a lost connection, a server restarting) is restarted
with exponential backoff while the others keep running; one that fails with a fatal error (a lost
position, a corrupt log, a refused configuration) stops and is reported.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from cdc.config import Config, PipelineConfig
from cdc.errors import ConfigError, LogCorrupt, PositionLost, SinkError, SourceError
from cdc.pipeline import Pipeline

log = logging.getLogger(__name__)

FATAL = (PositionLost, ConfigError, LogCorrupt)


def is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, FATAL) or (
        isinstance(exc, SinkError | SourceError) and not exc.retryable
    )


class Daemon:
    def __init__(self, config: Config, *, max_backoff: float = 60.0) -> None:
        self.config = config
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._current: dict[str, Pipeline] = {}
        self.failed: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for p in self._current.values():
                p.stop()

    def _supervise(self, cfg: PipelineConfig) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            pipeline = Pipeline(cfg)
            with self._lock:
                self._current[cfg.name] = pipeline
            if self._stop.is_set():
                pipeline.stop()
            started = time.monotonic()
            try:
                pipeline.run()
                return
            except Exception as e:
                if is_fatal(e):
                    log.error("pipeline %s stopped: %s", cfg.name, e)
                    self.failed[cfg.name] = e
                    return
                if time.monotonic() - started > 60:
                    backoff = 1.0
                log.warning(
                    "pipeline %s failed: %s: %s; restarting in %.0fs",
                    cfg.name,
                    type(e).__name__,
                    e,
                    backoff,
                )
                if not isinstance(e, Exception) or log.isEnabledFor(logging.DEBUG):
                    log.debug("traceback", exc_info=e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; return 0, or 1 if any pipeline stopped on a fatal error."""
        if install_signals:

            def handler(signum: int, frame: FrameType | None) -> None:
                log.info(
                    "received %s: stopping after the current batch", signal.Signals(signum).name
                )
                self.stop()

            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        threads = [
            threading.Thread(
                target=self._supervise, args=(p,), name=f"pipeline-{p.name}", daemon=True
            )
            for p in self.config.pipelines
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
        return 1 if self.failed else 0
