"""first_line: the one way a message is shortened to one line."""

from prismlab.errors import first_line


def test_first_line_takes_the_first_non_empty_line_or_the_type():
    assert first_line(ValueError("\n  bad value  \nmore\n")) == "bad value"
    assert first_line(KeyError()) == "KeyError"


def test_first_line_can_skip_a_header_and_keep_the_first_sentence():
    e = RuntimeError("Error(s) in loading state_dict for Net:\n\tMissing key(s): a.weight. Unexpected: b.")
    assert first_line(e) == "Error(s) in loading state_dict for Net:"
    assert first_line(e, skip_header=True) == "Missing key(s): a.weight. Unexpected: b."
    assert first_line(e, skip_header=True, sentence=True) == "Missing key(s): a.weight"
    assert first_line(RuntimeError("only line"), skip_header=True) == "only line"
