"""What the reliability tests tried (kill points, faults, hostile documents) and lost.

Printed at the end of the session and written to build/reliability.json by
conftest.py: the figures RELIABILITY.md quotes.
"""
from collections import Counter

FIGURES: Counter = Counter()
