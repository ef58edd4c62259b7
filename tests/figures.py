"""What the reliability tests tried (kill points, faults, hostile documents) and lost.

Printed at the end of the session and written to build/reliability.json by
conftest.py: the figures RELIABILITY.md quotes. A test adds to a figure only
after the assertions that make it true (the kill landed and the next run
converged, the fault was retried, every document is a row or a reject), so a
figure never counts what was not checked. ``documents lost`` is added to by
``tests.helpers.assert_nothing_lost`` only after it asserted that none was.
"""
from collections import Counter

FIGURES: Counter = Counter()


def markdown(path: str = "build/reliability.json") -> str:
    """The figures of the last session, as the table RELIABILITY.md quotes (``python -m tests.figures``)."""
    import json
    figures = json.loads(open(path).read())
    return "\n".join(["| figure | value |", "| --- | --- |"] +
                     [f"| {name} | {value:,} |" for name, value in sorted(figures.items())])


if __name__ == "__main__":
    print(markdown())
