"""The benchmark's parts, found from gigsterpg's registry of pipelines (``gigsterpg.pipelines.PIPELINES``).

``python -m bench`` measures ``OWN`` itself, on the generated Gigster dataset (the sync's rows of the table,
export-table's line); every other part is a module of ``bench/`` that declares the pipelines it measures
(``PIPELINES``), its name for ``--only`` (``ONLY``) and ``bench(results, setup)`` / ``render(results)``.
The bench loops over the registry: each pipeline's parts measure once, in the registry's order, and a
pipeline no part measures gets a line saying so. A new pipeline's benchmark is one module and one line in
``PARTS``.
"""
import dataclasses
from typing import Callable, Dict, List, Tuple

from bench import datasets, distributed, orders, snapshots

OWN = ("sync", "export-table")  # measured by bench/__main__ itself
PARTS = (distributed, orders, snapshots, datasets)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a part measures on: the servers, the generated dataset, the run's options."""

    server_url: str  # a maintenance database of the PostgreSQL server
    mongo_server: str  # the MongoDB server, no database
    mongo_url: str  # the database holding the generated Gigster dataset
    scale: float
    repeat: int
    batch_size: int
    server_pids: Dict[str, int]
    fresh: Callable[[], str]  # a fresh PostgreSQL database's URL, dropped at the end


def registry() -> Tuple[str, ...]:
    from gigsterpg import pipelines
    return pipelines.names()


def in_order() -> List:
    """The parts that measure a pipeline of the registry, each once, in the order of the first it measures."""
    found = []
    for name in registry():
        for part in PARTS:
            if name in part.PIPELINES and part not in found:
                found.append(part)
    return found


def unmeasured() -> List[str]:
    """The registry's pipelines no part of the bench measures."""
    measured = set(OWN).union(*(part.PIPELINES for part in PARTS))
    return [name for name in registry() if name not in measured]


def only(name: str):
    return next(part for part in PARTS if part.ONLY == name)
