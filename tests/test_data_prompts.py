"""Prompt sets: the shapes caption grammar and the .txt / .csv prompt loader."""
from __future__ import annotations

import re

import pytest

from bench.data.prompts import (BACKGROUNDS, COLOURS, KINDS, POSITIONS, SIZES, caption_for, load_prompts,
                                shapes_prompts)
from bench.data.shapes import ShapesSource

GRAMMAR = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(KINDS)}) at the ({'|'.join(POSITIONS)}) "
    rf"on a ({'|'.join(BACKGROUNDS)}) background")


def test_caption_for_example():
    attrs = {"kind": "circle", "colour": "red", "size": "small", "position": "top left", "background": "white"}
    assert caption_for(attrs) == "a small red circle at the top left on a white background"
    with pytest.raises(ValueError, match="colour='mauve'"):
        caption_for(dict(attrs, colour="mauve"))


def test_shapes_prompts_deterministic_and_grammatical():
    prompts = shapes_prompts(50, seed=7)
    assert prompts == shapes_prompts(50, seed=7)
    assert prompts[:20] == shapes_prompts(20, seed=7)
    assert prompts != shapes_prompts(50, seed=8)
    assert all(GRAMMAR.fullmatch(p) for p in prompts)
    assert len(set(prompts)) > 40


def test_shapes_prompts_are_the_test_split_captions():
    src = ShapesSource(16, n=30, seed=7, split="test")
    assert shapes_prompts(30, seed=7) == [src.caption(i) for i in range(30)]


def test_load_txt_skips_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\n  a blue square  \n\n", encoding="utf-8")
    assert load_prompts(path) == ["a red circle", "a blue square"]


@pytest.mark.parametrize("column", ["prompt", "caption"])
def test_load_csv(tmp_path, column):
    path = tmp_path / "prompts.csv"
    path.write_text(f'id,{column}\n1,"a cat, sitting"\n2,a dog\n', encoding="utf-8")
    assert load_prompts(path) == ["a cat, sitting", "a dog"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_prompts(tmp_path / "nope.txt")
    bad_column = tmp_path / "p.csv"
    bad_column.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.csv: no column named prompt or caption; found columns \['text'\]"):
        load_prompts(bad_column)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt contains no prompts"):
        load_prompts(empty)
    other = tmp_path / "p.json"
    other.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported extension"):
        load_prompts(other)
