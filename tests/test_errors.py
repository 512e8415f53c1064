"""Input checks shared by every layer: one message that says what to fix."""

from __future__ import annotations

import pytest
import torch

from advlab.errors import AdvlabError, check_images, check_labels, check_range


@pytest.mark.parametrize("x,message", [
    (torch.rand(1, 28, 28), "add a batch dimension"),
    (torch.full((2, 1, 4, 4), float("nan")), "NaN"),
    (torch.rand(2, 1, 4, 4) * 255, r"must lie in \[0, 1\]"),
    (torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8), "divide uint8 by 255"),
    ([[0.0]], "must be a torch.Tensor"),
])
def test_bad_images_are_refused_with_a_fix(x, message):
    with pytest.raises(AdvlabError, match=message):
        check_images(x)


def test_labels_and_ranges():
    check_images(torch.rand(2, 3, 4, 4), channels=3)
    with pytest.raises(AdvlabError, match="3 channel"):
        check_images(torch.rand(2, 1, 4, 4), channels=3)
    with pytest.raises(AdvlabError, match="length 2"):
        check_labels(torch.tensor([1, 2, 3]), 2)
    with pytest.raises(AdvlabError, match=r"0..9"):
        check_labels(torch.tensor([1, 12]), 2, 10)
    assert check_range("0.3", "eps", 0, 1) == 0.3
    with pytest.raises(AdvlabError, match=r"eps must be in \[0, 1\], got 1.5"):
        check_range(1.5, "eps", 0, 1)

