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


# Which figures speak of which pipeline: (kill points, faults, hostile inputs, items checked, items lost), each a
# tuple of figure names added up ("" where the suite counts nothing of that kind for the pipeline).
PIPELINES = {
    "sync": (("kill points tried: fixed points", "kill points tried: follower under writes",
              "kill points tried: random moments of a sync"), ("faults injected: sync",), ("hostile documents tried",),
             ("documents checked",), ("documents lost",)),
    "export-table": (("kill points tried: export-table",), ("faults injected: export-table",), (), ("rows checked",),
                     ("rows lost",)),
    "export-orders": (("kill points tried: export-orders",), ("faults injected: export-orders",),
                      ("hostile inputs tried: export-orders",), ("orders checked",), ("orders lost",)),
    "daily snapshots": (("kill points tried: daily snapshots",), ("faults injected: daily snapshots",),
                        ("hostile inputs tried: daily snapshots",), ("snapshot rows checked",), ()),
    "load-csv": (("kill points tried: load-csv", "kill points tried: random moments of a load-csv"),
                 ("faults injected: load-csv",), ("hostile inputs tried: datasets",), (), ()),
    "transform": (("kill points tried: transform",), ("faults injected: transform",), (), (), ()),
    "a job run by serve": (("kill points tried: API job (serve killed at a point)",
                            "kill points tried: API job (serve killed by the test)",
                            "kill points tried: API export job (serve killed by the test)"), (),
                           ("hostile HTTP requests tried",), ("rows checked after an API export killed",), ()),
}


def by_pipeline(path: str = "build/reliability.json") -> str:
    """One row per pipeline: kill points, faults, hostile inputs, items checked and lost (— where none is counted).

    The sync's faults are the ones no other pipeline names (its modules count only the total).
    """
    import json
    figures = json.loads(open(path).read())
    named = sum(value for name, value in figures.items() if name.startswith("faults injected: "))
    figures["faults injected: sync"] = figures.get("faults injected", 0) - named

    def cell(names):
        present = [figures[name] for name in names if name in figures]
        return f"{sum(present):,}" if present else "—"
    rows = ["| pipeline | kill points | faults | hostile inputs | items checked | items lost |",
            "| --- | --- | --- | --- | --- | --- |"]
    rows += [f"| {name} | " + " | ".join(cell(names) for names in columns) + " |"
             for name, columns in PIPELINES.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(by_pipeline())
    print()
    print(markdown())
