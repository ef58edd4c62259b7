"""Pipelines run by the API (``POST /runs``): each in a thread of the server, recorded in ``pipeline_runs``.

The run's record is written (queued) before ``POST /runs`` answers, its lock held by the run's own
connection until it ends (``gigsterpg.pipelines.runs.Run``): a server that dies leaves records every reader
shows as interrupted. At most ``max_running`` runs at once; the others wait as queued. A server stopping asks
its runs to stop at their next progress report (they end interrupted; a run that reports no progress ends
when its work does, or with the server's process).
"""
import logging
import threading
from typing import Any, Dict, Optional

from gigsterpg.config import Settings
from gigsterpg.exc import GigsterPgError, Interrupted
from gigsterpg.lib.pg.db.states import API
from gigsterpg.lib.pg.sync.engine.runner import Progress
from gigsterpg.pipelines import execute, params
from gigsterpg.pipelines.contract import Context, Pipeline
from gigsterpg.pipelines.runs import Run

logger = logging.getLogger(__name__)

SERVER_STOPPED = "the server was stopped before the run ended; restart it with POST /runs/{id}/restart"


class RunStopped(Interrupted):
    """Raised in a run's thread at its next progress report once the server is stopping."""


class StopAware(Progress):
    """A progress sink that only stops the run when the server is stopping."""

    def __init__(self, stopping: threading.Event):
        self.stopping = stopping

    def start(self, name: str, total: int) -> None:
        self._check()

    def advance(self, count: int) -> None:
        self._check()

    def done_so_far(self, done: int) -> None:
        self._check()

    def _check(self) -> None:
        if self.stopping.is_set():
            raise RunStopped("the server is stopping")


class PipelineRuns:
    """Starts the API's pipeline runs (``settings``: the server's; ``keep``: GIGSTERPG_API_JOBS_KEEP)."""

    def __init__(self, settings: Settings, max_running: int = 4):
        self.settings = settings
        self.slots = threading.BoundedSemaphore(max_running)
        self.stopping = threading.Event()
        self.live: Dict[int, threading.Thread] = {}
        self._guard = threading.Lock()

    def start(self, pipeline: Pipeline, given: Dict[str, Any], restart_of: Optional[int] = None) -> int:
        """Check the parameters (ConfigError: a 400), their files (inside GIGSTERPG_FILES_ROOT) and what the verb
        checks before it starts (``Pipeline.check``), record the run as queued and start it; its id."""
        values = params.validate(pipeline, given)
        values = params.inside_root(pipeline, values, self.settings.files_root)
        settings = execute.settings_for(pipeline, self.settings, values)
        execute.check(pipeline, settings, values)
        run = execute.open_run(pipeline, settings, values, API, restart_of)
        thread = threading.Thread(target=self._work, args=(run, pipeline, settings, values),
                                  name=f"run-{pipeline.name}-{run.id}", daemon=True)
        with self._guard:
            self.live[run.id] = thread
        thread.start()
        logger.info("pipeline run %s (%s) queued", run.id, pipeline.name)
        return run.id

    def _work(self, run: Run, pipeline: Pipeline, settings: Settings, values: Dict[str, Any]) -> None:
        try:
            with self.slots:
                if self.stopping.is_set():
                    run.interrupted(SERVER_STOPPED)
                    return
                with execute.recorded(pipeline, settings, values, API, run=run) as holder:
                    context = Context(settings, API, StopAware(self.stopping))
                    execute.run_verb(pipeline, context, values, holder)
            logger.info("pipeline run %s (%s) ended", run.id, pipeline.name)
        except BaseException as err:  # recorded already (failed or interrupted); the log keeps the traceback
            logger.warning("pipeline run %s (%s) ended: %s", run.id, pipeline.name, type(err).__name__,
                           exc_info=not isinstance(err, (KeyboardInterrupt, GigsterPgError)))
        finally:
            with self._guard:
                self.live.pop(run.id, None)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask this server's runs to stop, and wait for them a while."""
        import time
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in list(self.live.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
