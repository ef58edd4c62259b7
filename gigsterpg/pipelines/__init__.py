"""The registry of pipelines: the one list the CLI, the API (``/pipelines``, ``/runs``), ``status`` and the page
loop over, as ``gigsterpg.lib.pg.sync.registry.MODELS`` is for the synced collections.

A pipeline is a folder ``gigsterpg/pipelines/<name>/`` whose ``__init__`` declares ``PIPELINE`` (see
``contract.py`` for its parts); a new pipeline adds its folder and one line to ``PIPELINES`` below.
"""
from typing import Callable, Dict, Optional, Tuple

from gigsterpg.pipelines import export_orders, export_table, load_csv, snapshots, sync, transform
from gigsterpg.pipelines.contract import Param, Pipeline, Report

PIPELINES: Dict[str, Pipeline] = {each.name: each for each in (
    sync.PIPELINE,
    export_table.PIPELINE,
    export_orders.PIPELINE,
    snapshots.PIPELINE,
    load_csv.PIPELINE,
    transform.PIPELINE,
)}


def names() -> Tuple[str, ...]:
    return tuple(PIPELINES)


def get(name: str) -> Optional[Pipeline]:
    return PIPELINES.get(name)


def register(pipeline: Pipeline) -> Callable[[], None]:
    """Add ``pipeline`` (a plug-in, a test's toy); returns what takes it out again."""
    if pipeline.name in PIPELINES:
        raise ValueError(f"the pipeline registry already lists {pipeline.name!r}")
    PIPELINES[pipeline.name] = pipeline
    return lambda: PIPELINES.pop(pipeline.name, None)


def of_command(command: Optional[str], args=None) -> Optional[Pipeline]:
    """The pipeline a CLI command runs (``pipeline run``: snapshots; ``pipeline status``: none)."""
    for each in PIPELINES.values():
        if each.cli_command != command:
            continue
        if each.step is None or (args is not None and getattr(args, each.step[0], None) == each.step[1]):
            return each
    return None


__all__ = ["PIPELINES", "Param", "Pipeline", "Report", "get", "names", "of_command", "register"]
