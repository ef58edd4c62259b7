"""How numbers read in what gigsterpg prints: ``30,000`` everywhere, ``1 bad line`` and ``2 bad lines``."""

_IRREGULAR = {"was": "were", "is": "are"}


def number(value) -> str:
    """``30000`` -> ``30,000`` (a float to a whole number: counts and rates)."""
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


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
