"""The dotted-date scan of load-csv's fast path (lib.datasets.fastcopy): a dotted date anywhere in the file
sends it through the Python reader when slashes are month first; the scan looks from each dot."""
import random

import pytest

from gigsterpg.lib.datasets import fastcopy


@pytest.mark.parametrize("text, found", [
    (b"id,day\n1,26.09.2022\n", True),
    (b"26.09.2022", True),  # at the very start and end
    (b"1.2.2022,x", True),
    (b"a,x26.09.2022\n", True),  # a letter before is no digit
    (b"id,amount\n1,1234.56\n2,0.5\n", False),
    (b"126.09.2022", False),  # three digits of day
    (b"1.26.09.2022", False),  # a dot before
    (b"26.09.20221", False),  # five digits of year
    (b"26.09.2022.", False),
    (b"26.099.2022", False),
    (b"2022-09-26,9/26/2022", False),
])
def test_dotted_dates_found_by_hand(text, found):
    assert fastcopy._dotted(text) is found


def test_the_scan_finds_what_the_full_pattern_finds():
    rng = random.Random(15)
    for _ in range(20000):
        text = bytes(rng.choice(b"0123456789..,x\n") for _ in range(rng.randint(0, 16)))
        assert fastcopy._dotted(text) is bool(fastcopy.DOTTED_DATE.search(text)), text


def test_a_dotted_date_across_two_chunks_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(fastcopy, "CHUNK", 8)
    path = tmp_path / "split.csv"
    path.write_bytes(b"id,day\n1,1/2/2022\n2,26.09.2022\n")
    assert fastcopy._has_dotted_date(path) is True
    path.write_bytes(b"id,day\n1,1/2/2022\n2,26/09/2022\n3,12.5\n")
    assert fastcopy._has_dotted_date(path) is False
