"""models.layers: the projection head's one matrix product against the two-term formula."""

import pytest
import torch

from models.layers import ProjectionHead


def reference(head: ProjectionHead, phi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``w.phi + b + <embed(y), phi>`` on (C, H, W)-ordered features: the textbook form."""
    flat = phi.reshape(phi.shape[0], -1)  # nn.Flatten's order, whatever the memory format
    return head.linear(flat).squeeze(1) + (head.embed(labels) * flat).sum(dim=1)


@pytest.mark.parametrize("layout", ["flat", "contiguous", "channels_last"])
@pytest.mark.parametrize("sn", [False, True])
def test_head_matches_the_two_term_formula_in_value_and_gradient(layout: str, sn: bool) -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8 * 3 * 3, 10, sn).eval()  # eval: spectral norm's power step stays put
    phi = torch.randn(6, 8, 3, 3)
    if layout == "flat":
        phi = phi.flatten(1)
    elif layout == "channels_last":
        phi = phi.contiguous(memory_format=torch.channels_last)
        assert not phi.is_contiguous()  # a real permuted layout, not a trivially shaped one
    labels = torch.tensor([0, 3, 9, 3, 1, 7])
    phi.requires_grad_(True)
    ours = head(phi, labels)
    grads = torch.autograd.grad(ours.sum(), [phi, *head.parameters()])
    theirs = reference(head, phi, labels)
    expected = torch.autograd.grad(theirs.sum(), [phi, *head.parameters()])
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_unconditional_head_is_the_linear_layer_alone() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(12, 0, False)
    phi = torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(head(phi, None), head.linear(phi.reshape(4, -1)).squeeze(1))


def test_conditional_head_refuses_missing_labels() -> None:
    with pytest.raises(ValueError, match="needs labels"):
        ProjectionHead(4, 10, False)(torch.randn(2, 4), None)
