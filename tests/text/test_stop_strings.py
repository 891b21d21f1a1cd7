import pytest

from ragglm.text.stop_strings import StopStringFilter, truncate_at_stop


def test_truncate_at_earliest_stop():
    assert truncate_at_stop("one two three four", ["four", "two"]) == ("one ", True)
    assert truncate_at_stop("one two", ["nine"]) == ("one two", False)
    assert truncate_at_stop("one two", None) == ("one two", False)


@pytest.mark.parametrize("pieces", [
    ["Answer: 4", "2\nQues", "tion: next"],
    ["Answer: 42\n", "Question", ": next"],
    ["A", "n", "s", "w", "e", "r", ":", " ", "4", "2", "\n", "Q", "u", "e", "s", "t", "i", "o", "n"],
])
def test_streamed_stop_never_leaks_a_partial_stop_string(pieces):
    stops = StopStringFilter(["\nQuestion"])
    shown = [stops.feed(p) for p in pieces]
    shown.append(stops.flush())
    assert "".join(shown) == "Answer: 42"
    assert stops.stopped
    assert all("Q" not in s for s in shown)


def test_held_back_tail_is_released_when_no_stop_follows():
    stops = StopStringFilter(["END"])
    assert stops.feed("the EN") == "the "  # "EN" might begin "END"
    assert stops.feed("ding") == "ENding"
    assert stops.feed(" E") == " "
    assert stops.flush() == "E"
    assert stops.text == "the ENding E" and not stops.stopped


def test_no_stops_passes_everything_through():
    stops = StopStringFilter()
    assert [stops.feed(p) for p in ["a", "b"]] == ["a", "b"]
    assert stops.flush() == ""
