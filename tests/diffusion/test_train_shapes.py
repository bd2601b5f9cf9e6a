"""The procedural shapes dataset: seeded, pure per index, captions that say what is drawn."""

from __future__ import annotations

import numpy as np

from diffusion.train.shapes import (
    COLOURS,
    PLACES,
    SHAPES,
    caption_for,
    describe,
    dominant_colours,
    make_batch,
    nearest_colour,
    render,
)


def test_sample_depends_only_on_seed_and_index() -> None:
    images, samples = make_batch(7, 10, 4)
    again = [describe(7, i) for i in range(10, 14)]
    assert samples == again
    assert np.array_equal(images[2], render(describe(7, 12)))
    other, _ = make_batch(8, 10, 4)
    assert not np.array_equal(images, other)


def test_images_are_64px_rgb_with_background_and_shape_colours() -> None:
    images, samples = make_batch(0, 0, 64)
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    for image, sample in zip(images, samples, strict=True):
        assert sample.colour != sample.background
        assert tuple(image[0, 0]) == COLOURS[sample.background] or sample.centre[0] < sample.radius + 2
        assert dominant_colours(image) == (sample.colour, sample.background)


def test_captions_name_colour_and_shape_and_use_the_grammar() -> None:
    _, samples = make_batch(3, 0, 200)
    for s in samples:
        assert f"{s.colour} {s.shape}" in s.caption
        if s.place:
            assert f"in the {s.place}" in s.caption
        if "background" in s.caption:
            assert s.caption.endswith(f"{s.background} background")
    said = [s for s in samples if "background" in s.caption]
    assert 0.75 < len(said) / len(samples) < 0.95  # some captions leave the background open
    assert {s.shape for s in samples} == set(SHAPES)
    assert {s.place for s in samples} - {None} == set(PLACES)


def test_caption_articles() -> None:
    assert caption_for("circle", "red", "blue", None, None) == "a red circle on a blue background"
    assert caption_for("star", "orange", "orange", "small", "top left") == (
        "a small orange star in the top left on an orange background"
    )
    assert caption_for("ring", "orange", None, None, None) == "an orange ring"


def test_placed_shapes_are_in_their_quarter() -> None:
    _, samples = make_batch(5, 0, 300)
    for s in samples:
        if s.place == "top left":
            assert s.centre[0] < 32 and s.centre[1] < 32
        if s.place == "bottom right":
            assert s.centre[0] > 32 and s.centre[1] > 32


def test_colour_measurement() -> None:
    assert nearest_colour((250, 120, 30)) == "orange"
    assert nearest_colour((20, 20, 20)) == "black"
    plain = np.full((64, 64, 3), COLOURS["green"], dtype=np.uint8)
    assert dominant_colours(plain) == ("none", "green")
    plain[20:40, 20:40] = COLOURS["purple"]
    assert dominant_colours(plain) == ("purple", "green")
