"""The prompt-alignment rules (bench/tools/prompt_alignment.py) on rendered shapes with known answers."""
from __future__ import annotations

import pytest
import torch

from bench.data.shapes import render
from bench.tools.prompt_alignment import alignment, disc_fill, pixel_colour, pixel_kind


def shape(kind: str, colour: str, background: str, rotation: float = 10.0) -> torch.Tensor:
    attributes = {"kind": kind, "colour": colour, "size": "large", "position": "center", "background": background}
    image = render(attributes, {"cx": 0.5, "cy": 0.5, "r": 0.145, "rotation": rotation}, 32)
    return torch.from_numpy(image).permute(2, 0, 1)


class ColourEmbedder:
    """A stand-in CLIP that embeds images by their mean red-minus-blue and texts by their colour word."""
    name = "colour-stand-in"

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        return torch.stack([(x[:, 0] - x[:, 2]).mean((1, 2)), torch.zeros(len(x))], 1)

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0] if "red" in p else [-1.0, 0.0] for p in prompts])


def test_rules_read_colour_and_shape_of_rendered_shapes() -> None:
    images = torch.stack([shape("circle", "red", "white"), shape("square", "blue", "gray"),
                          shape("circle", "blue", "beige"), shape("square", "red", "black", rotation=-14.0)])
    assert pixel_colour(images) == ["red", "blue", "blue", "red"]
    assert pixel_colour(images, ["red", "blue"]) == ["red", "blue", "blue", "red"]
    assert pixel_kind(images) == ["circle", "square", "circle", "square"]
    fills = disc_fill(images)
    assert fills[0] > 0.85 and fills[1] < 0.7                  # ~1 for a disc, ~2/pi for a square
    empty = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)  # gray background only: no object
    assert pixel_colour(empty) == [None] and pixel_kind(empty) == [None]


def test_alignment_scores_each_prompt_against_its_own_images() -> None:
    red = torch.stack([shape("circle", "red", "white")] * 3)
    blue = torch.stack([shape("square", "blue", "white")] * 2 + [shape("circle", "red", "white")])
    result = alignment({"a red circle": red, "a blue square": blue}, ColourEmbedder())
    assert result["n"] == 6 and result["clip_chance"] == 0.5
    assert result["clip_accuracy"] == pytest.approx(5 / 6)
    assert result["colour_in_set_accuracy"] == pytest.approx(5 / 6)
    assert result["kind_accuracy"] == pytest.approx(5 / 6)
    assert result["per_prompt"]["a blue square"]["colour_in_set_and_kind_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="a \\{colour\\} \\{kind\\}"):
        alignment({"a dog": red}, ColourEmbedder())
