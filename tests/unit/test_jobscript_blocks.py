"""The metadata-block scanner finds what PEP 723's regular expression finds, in linear time."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdist import jobscript
from netdist.errors import JobScriptError
from tests.unit.test_jobscript import script

PEP_723 = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
"""The reference implementation's expression: the specification the scanner must match."""

LINES = [
    "# /// script",
    "# /// a-1",
    "# ///",
    "#",
    "# x = 1",
    "#x",
    "",
    "x = 1",
    "# /// script\r",
    "#///",
    " # ///",
    "# ///  ",
    "# /// ",
    "# /// sc ript",
    "# # ///",
]


def reference(source: str) -> list[tuple[str, list[str]]]:
    return [(m.group("type"), m.group("content").split("\n")[:-1]) for m in PEP_723.finditer(source)]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=14), st.booleans())
def test_the_scanner_finds_the_blocks_the_reference_expression_finds(lines: list[str], newline: bool) -> None:
    source = "\n".join(lines) + ("\n" if newline else "")
    assert jobscript.metadata_blocks(source) == reference(source)


@pytest.mark.parametrize(
    "source",
    [
        "# /// script\n# a = 1\n# ///",  # the closing line may end the file
        "# /// script\n# ///\n# ///\n",  # the last closing line of the run ends the block
        "# /// script\n#\n# ///\nx\n# ///\n",
        "# /// script\n# a\n#///\n# ///\n",  # '#///' is no comment line of a block
        "# /// a\n# /// script\n# x\n# ///\n# /// script\n# y\n# ///\n",
    ],
)
def test_edge_cases_agree_with_the_reference(source: str) -> None:
    assert jobscript.metadata_blocks(source) == reference(source)


@pytest.mark.parametrize(
    "source",
    [
        "# /// a\n" * 130_000,  # 1 MB: each line opens a block the next ones never close
        "# /// script\n" + "# x\n" * 250_000,
        ("# /// script\n" + "#\n" * 1000) * 300,
        os.urandom(1 << 20).decode("latin-1"),
    ],
    ids=["openers", "unclosed", "many-unclosed", "random"],
)
def test_a_megabyte_of_adversarial_lines_is_read_at_once(source: str) -> None:
    """The per-test timeout catches a quadratic scan (the old expression took minutes here)."""
    with pytest.raises(JobScriptError, match="no metadata block"):
        jobscript.read_block(source)


def test_a_block_after_a_megabyte_of_openers_is_found() -> None:
    source = "# /// a\n" * 130_000 + "x = 1\n" + script()
    assert jobscript.read_block(source)["tool"]["netdist"]["job"] == "add"


def test_deeply_nested_toml_is_refused_not_crashed() -> None:
    source = "# /// script\n# a = " + "[" * 100_000 + "\n# ///\n"
    with pytest.raises(JobScriptError, match="metadata block is not valid TOML"):
        jobscript.read_block(source)
