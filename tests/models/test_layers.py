"""models.layers: the projection head's one matrix product against the two-term formula, the
label spread's conv against the conv over the appended plane, and the spread's written-out
gradient against autograd's."""

import pytest
import torch

from models.layers import LabelSpread, ProjectionHead, SpreadPlane, SpreadValues, maybe_sn, spread_stats


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


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("sn", [False, True])
def test_spread_conv_matches_the_conv_over_the_appended_plane(layout: str, sn: bool) -> None:
    """``LabelSpread.conv`` (what D runs) against ``conv(LabelSpread(x))`` (the definition): the
    same value and the same gradients for the map and for every weight, borders included."""
    torch.manual_seed(0)
    spread = LabelSpread(10)
    conv = maybe_sn(torch.nn.Conv2d(8 + 1, 8, 3, padding=1), sn).eval()  # eval: as above
    x = torch.randn(6, 8, 5, 5)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        conv = conv.to(memory_format=torch.channels_last)
    labels = torch.tensor([3, 3, 3, 5, 5, 7])
    x.requires_grad_(True)
    ours = spread.conv(conv, x, spread.values(x, labels))
    grads = torch.autograd.grad(ours.square().sum(), [x, *conv.parameters()])
    theirs = conv(spread(x, labels))
    expected = torch.autograd.grad(theirs.square().sum(), [x, *conv.parameters()])
    assert ours.shape == (6, 8, 5, 5)
    assert spread.values(x, labels)[5] < 1e-3 < spread.values(x, labels)[0]  # 7 is seen once
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_spread_values_are_each_labels_feature_spread(layout: str) -> None:
    """Each image gets its label's population standard deviation over the batch, feature by
    feature, averaged over the features; a channels_last map gives the same values and the same
    gradient as its contiguous twin."""
    torch.manual_seed(0)
    x = torch.randn(7, 4, 3, 3)
    labels = torch.tensor([1, 1, 1, 4, 4, 9, 1])
    expected = torch.stack([x[labels == y].reshape(-1, 36).var(0, unbiased=False).add(1e-8).sqrt()
                            .mean() for y in labels])  # 1e-8: the plane's guard against sqrt(0)
    twin = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x.clone()
    assert twin.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    x.requires_grad_(True)
    twin.requires_grad_(True)
    spread = LabelSpread(10)
    values, twins = spread.values(x, labels), spread.values(twin, labels)
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(twins, values, rtol=1e-6, atol=1e-6)
    weights = torch.arange(7.0)
    (grad,), (twin_grad,) = (torch.autograd.grad((v * weights).sum(), [t])
                             for v, t in ((values, x), (twins, twin)))
    torch.testing.assert_close(twin_grad, grad, rtol=1e-5, atol=1e-6)
    assert grad[5].abs().max() < 1e-3 < grad[0].abs().max()  # a lone image's spread is ~0


def spread_inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """A (9, 7) map (labels 0 and 1 three times each, 2 once, 3 twice) and its (9, 4) one-hot."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 0])
    return torch.randn(9, 7, dtype=dtype), torch.nn.functional.one_hot(labels, 4).to(dtype)


def test_spread_gradient_is_autograds_first_and_second_order() -> None:
    """``SpreadValues``' written-out gradient against finite differences (gradcheck), the
    gradient of that gradient as R1's penalty takes it (gradgradcheck), and against autograd's
    own chain through ``spread_stats``."""
    flat, onehot = spread_inputs()
    flat.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: SpreadValues.apply(f, onehot), (flat,))
    assert torch.autograd.gradgradcheck(lambda f: SpreadValues.apply(f, onehot), (flat,))
    weights = torch.randn(4, dtype=torch.float64)
    ours = torch.autograd.grad(SpreadValues.apply(flat, onehot), flat, weights)[0]
    autograds = torch.autograd.grad(spread_stats(flat, onehot)[-1], flat, weights)[0]
    torch.testing.assert_close(ours, autograds, rtol=1e-10, atol=1e-12)
    assert ours[5].abs().max() < 1e-6 < ours[0].abs().max()  # label 2 is seen once


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_spread_plane_gradient_is_autograds_first_and_second_order(layout: str) -> None:
    """``SpreadPlane``'s matrix-vector gradient, for the map, the spread and the plane, against
    finite differences and its own gradient (gradgradcheck), in either memory layout."""
    torch.manual_seed(0)
    out, plane = torch.randn(4, 3, 2, 5, dtype=torch.float64), torch.randn(1, 3, 2, 5, dtype=torch.float64)
    if layout == "channels_last":
        out, plane = (t.contiguous(memory_format=torch.channels_last) for t in (out, plane))
    spread = torch.rand(4, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (out, spread, plane))
    assert torch.autograd.gradcheck(SpreadPlane.apply, inputs)
    assert torch.autograd.gradgradcheck(SpreadPlane.apply, inputs)
    weights = torch.randn_like(out)  # in out's layout: the channels_last branch of the backward
    assert weights.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    ours = SpreadPlane.apply(*inputs)
    theirs = out + spread.view(-1, 1, 1, 1) * plane
    torch.testing.assert_close(ours, theirs)
    for g, e in zip(torch.autograd.grad(ours, inputs, weights), torch.autograd.grad(theirs, inputs, weights),
                    strict=True):
        torch.testing.assert_close(g, e)


def test_spread_statistics_are_float32_under_bf16_autocast() -> None:
    """Under autocast a matrix product would run in bf16, and E[x^2] - E[x]^2 cancels: the
    spread of a bf16 map under autocast is the float32 spread of the same map, not a bf16 one."""
    torch.manual_seed(0)
    x = (torch.randn(60, 16, 3, 3) * 0.5 + 4.0).bfloat16()  # mean >> spread: where bf16 fails
    x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(60) % 10  # 6 images a label
    exact = LabelSpread(10).values(x.float(), labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = LabelSpread(10).values(x, labels)
        flat = x.float().flatten(1)  # what autograd's chain would do under autocast
        onehot = torch.nn.functional.one_hot(labels, 10).float()
        mean = onehot.T @ flat / 6
        bf16 = (onehot.T @ flat.square() / 6 - mean.square()).clamp(min=0).add(1e-8).sqrt()
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, rtol=1e-6, atol=1e-7)
    assert mean.dtype == torch.bfloat16 and not torch.allclose(bf16.mean(1).float(), exact[:10], rtol=0.02)


def test_spread_conv_under_bf16_autocast_stays_close() -> None:
    torch.manual_seed(0)
    spread, conv = LabelSpread(10), torch.nn.Conv2d(8 + 1, 8, 3, padding=1)
    x, labels = torch.randn(6, 8, 5, 5), torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = spread.conv(conv, x, spread.values(x, labels))
        theirs = conv(spread(x, labels))
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=0.05, atol=0.05)


def test_spread_conv_refuses_a_padding_it_does_not_model() -> None:
    conv = torch.nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="zero padding"):
        LabelSpread.conv(conv, torch.randn(2, 2, 4, 4), torch.ones(2))
