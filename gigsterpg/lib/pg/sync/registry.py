"""The sync models, parents before children: the one list everything else is derived from.

The collections a sync reads (and their order), the CLI's ``--collections``,
the API's collection type, the follower's change stream and which models link
late references after a parent's scan all come from ``MODELS``. A new
collection adds one line here (see ``SyncModel`` for what its model provides).
"""
from typing import Iterable, Literal, Tuple

from gigsterpg.lib.pg.sync.contract import SyncModel
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.user import UserSync

MODELS: Tuple[SyncModel, ...] = (UserSync, GigSync)

COLLECTIONS: Tuple[str, ...] = tuple(model.collection for model in MODELS)
# The type of a collection's name where one is accepted (the API's request bodies).
CollectionName = Literal[COLLECTIONS]


def _check(models) -> None:
    """Each collection once, and after every collection it references."""
    seen = set()
    for model in models:
        if model.collection in seen:
            raise ValueError(f"the sync registry lists {model.collection!r} twice")
        missing = [parent for parent in model.parents if parent not in seen]
        if missing:
            raise ValueError(f"the sync registry lists {model.collection!r} before its parents {missing}")
        seen.add(model.collection)


_check(MODELS)


def model(collection: str) -> SyncModel:
    """The model of ``collection`` (KeyError for one the registry does not know)."""
    return {each.collection: each for each in MODELS}[collection]


def ordered(collections: Iterable[str]) -> Tuple[str, ...]:
    """``collections`` in the registry's order (parents first); names it does not know are left out."""
    wanted = set(collections)
    return tuple(name for name in COLLECTIONS if name in wanted)


def children(collection: str) -> Tuple[SyncModel, ...]:
    """The models whose rows reference ``collection``'s: their ``link`` runs after it changed."""
    return tuple(each for each in MODELS if collection in each.parents)


def names(joiner: str = ", ", last: str = " and ") -> str:
    """The collections for a sentence: ``users and gigs``."""
    return joiner.join(COLLECTIONS[:-1]) + last + COLLECTIONS[-1] if len(COLLECTIONS) > 1 else COLLECTIONS[0]
