"""The embedded text: harvested from the standard library, split by file, deterministic."""

from autoprune.corpus import SPLITS, corpus_text, paragraphs, source_files, split_of

SOURCE = '''"""Module docstring."""
# first comment line
# continues here

def f():
    """Function docstring."""
    return 1  # trailing note
'''


def test_paragraphs_are_docstrings_and_comment_runs():
    assert list(paragraphs(SOURCE)) == [
        "Module docstring.",
        "Function docstring.",
        "first comment line continues here",
        "trailing note",
    ]


def test_unparsable_source_yields_nothing():
    assert list(paragraphs("def broken(:\n")) == []


def test_splits_are_disjoint_and_mostly_train():
    files = {split: set(source_files(split)) for split in SPLITS}
    assert all(files.values())
    assert (
        not files["train"] & files["calib"]
        and not files["train"] & files["eval"]
        and not files["calib"] & files["eval"]
    )
    assert len(files["train"]) > 10 * len(files["eval"])


def test_split_assignment_depends_only_on_the_path():
    assert split_of("json/decoder.py") == split_of("json/decoder.py")
    assert {split_of(f"pkg/module_{i}.py") for i in range(200)} == set(SPLITS)


def test_text_is_deterministic_and_bounded():
    first = corpus_text("eval", max_chars=5000)
    assert first == corpus_text.__wrapped__("eval", max_chars=5000)  # harvested again, not the kept text
    assert len(first) == 5000
