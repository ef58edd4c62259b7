"""How numbers and names read in what gigsterpg prints: ``30,000`` everywhere, ``1 bad line`` and ``2 bad lines``,
a name a user sent quoted short and masked."""
from gigsterpg.masking import mask_url

_IRREGULAR = {"was": "were", "is": "are"}
# The most of a name a user sent that an error quotes (a 60,000-character name is not sent back whole).
SHOWN = 40


def number(value) -> str:
    """``30000`` -> ``30,000`` (a float to a whole number: counts and rates)."""
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def shown(name, limit: int = SHOWN) -> str:
    """``name`` as an error quotes it: masked, quoted, its first ``limit`` characters (``'abc'...`` and its length
    beyond them); a short name reads as ``repr`` shows it."""
    text = mask_url(str(name))
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({number(len(text))} characters)"


def cut(text, limit: int = SHOWN) -> str:
    """``text`` (a list of names a message quotes, say) masked and cut as ``shown`` cuts a name, unquoted."""
    text = mask_url(str(text))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({number(len(text))} characters)"


def place(loc) -> str:
    """Where a request's validation failed (``body.params.tax_rate``), each long name in it cut short."""
    return ".".join(str(part) if len(str(part)) <= SHOWN else shown(part) for part in loc)


def plural(count, word: str, many: str = "") -> str:
    """``count`` and ``word``, in the plural unless it is 1: ``plural(1, "bad line")`` -> ``1 bad line``.

    ``many`` is the plural where adding "s" is wrong (``plural(2, "reason", "reasons")``; "orders" and
    "documents" need none).
    """
    if count == 1:
        return f"{number(count)} {word}"
    head, _, last = word.rpartition(" ")
    many = many or (head + " " if head else "") + _IRREGULAR.get(last, last + "s")
    return f"{number(count)} {many}"
