"""medgen.families.conv3d: the CPU weight gradient computed as a convolution equals PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgen.families.conv3d import Conv3d, _Conv3dFunction, conv3d, weight_gradient

# (input shape, out channels, kernel, stride, padding): HA-GAN's layer kinds (3³ same, 4³ stride 2, anisotropic
# slab kernels, the sub-pixel 2³ kernel with padding 1, a "valid" final conv), odd sizes that leave a
# remainder after the stride, and both input gradients of strided layers (phased up to 4 input channels)
CASES = [
    ((2, 3, 8, 8, 8), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((2, 1, 16, 16, 4), 3, (4, 4, 2), (2, 2, 2), (1, 1, 0)),
    ((3, 4, 5, 5, 5), 6, (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ((2, 2, 9, 7, 6), 3, (4, 4, 4), (2, 2, 2), (1, 1, 1)),
    ((2, 5, 4, 4, 3), 2, (4, 4, 3), (1, 1, 1), (0, 0, 0)),
    ((1, 2, 11, 10, 9), 2, (3, 2, 4), (3, 2, 1), (2, 0, 1)),
    ((2, 6, 8, 8, 8), 3, (4, 4, 4), (2, 2, 2), (1, 1, 1)),  # strided, too many input channels for the phases
]


def _grads(fn, x, w, b, g):
    return torch.autograd.grad(fn(x, w, b), (x, w, b), g)


@pytest.mark.parametrize("shape, cout, kernel, stride, padding", CASES)
def test_gradients_equal_pytorch_s(shape, cout, kernel, stride, padding):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, shape[1], *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    ref_out = F.conv3d(x, w, b, stride, padding)
    g = torch.randn_like(ref_out)
    ref = _grads(lambda *a: F.conv3d(*a, stride, padding), x, w, b, g)
    ours = _grads(lambda *a: _Conv3dFunction.apply(*a, stride, padding), x, w, b, g)
    assert torch.equal(_Conv3dFunction.apply(x, w, b, stride, padding), ref_out)
    for r, o in zip(ref, ours):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)
    # the weight gradient by its definition, a sum over batch and output positions (independent of both)
    xp = F.pad(x.detach(), (padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
    direct = torch.zeros_like(w)
    for p in torch.cartesian_prod(*[torch.arange(n) for n in g.shape[2:]]).tolist():
        lo = [p[d] * stride[d] for d in range(3)]
        patch = xp[:, :, lo[0]:lo[0] + kernel[0], lo[1]:lo[1] + kernel[1], lo[2]:lo[2] + kernel[2]]  # [B, I, *k]
        direct += torch.einsum("bo,bijkl->oijkl", g[:, :, p[0], p[1], p[2]], patch)
    torch.testing.assert_close(weight_gradient(x.detach(), g, kernel, stride, padding), direct, rtol=1e-10, atol=1e-10)


def test_the_input_gradient_is_differentiable_again_as_for_an_r1_penalty():
    torch.manual_seed(1)
    x = torch.randn(2, 2, 8, 8, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 4, 4, 2, dtype=torch.float64, requires_grad=True)

    def r1(fn):
        (gx,) = torch.autograd.grad(fn(x, w).square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), w)[0]

    torch.testing.assert_close(r1(lambda a, c: _Conv3dFunction.apply(a, c, None, (2, 2, 2), (1, 1, 0))),
                               r1(lambda a, c: F.conv3d(a, c, None, (2, 2, 2), (1, 1, 0))), rtol=1e-9, atol=1e-9)
    assert torch.autograd.gradcheck(lambda a, c: _Conv3dFunction.apply(a, c, None, (2, 2, 2), (1, 1, 0)), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, c: _Conv3dFunction.apply(a, c, None, (2, 2, 2), (1, 1, 0)), (x, w))


def test_the_module_matches_torch_s_in_float32_and_keeps_its_state_dict():
    torch.manual_seed(2)
    ours = Conv3d(3, 5, kernel_size=4, stride=2, padding=1)
    ref = torch.nn.Conv3d(3, 5, kernel_size=4, stride=2, padding=1)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 3, 12, 12, 12)
    y, y_ref = ours(x), ref(x)
    assert y.grad_fn.name().startswith("_Conv3dFunction")  # the fast path was taken
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)


def test_other_cases_are_torch_s_own_convolution():
    torch.manual_seed(3)
    x = torch.randn(1, 4, 6, 6, 6)
    w = torch.randn(4, 2, 3, 3, 3, requires_grad=True)
    assert conv3d(x, w, groups=2).grad_fn.name() == "ConvolutionBackward0"  # groups
    w1 = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    assert conv3d(x, w1, dilation=2).grad_fn.name() == "ConvolutionBackward0"  # dilation
    assert conv3d(x, w1, padding="same").grad_fn.name() == "ConvolutionBackward0"
    assert conv3d(x, w1.detach()).grad_fn is None  # no gradient wanted: nothing to speed up
    xg = x.clone().requires_grad_()
    assert conv3d(xg, w1.detach(), padding=1).grad_fn.name() == "ConvolutionBackward0"  # input gradient, stride 1
    w4 = torch.randn(2, 4, 4, 4, 4)  # a frozen strided layer (D in the G step): the phased input gradient
    y = conv3d(xg, w4, stride=2, padding=1)
    assert y.grad_fn.name().startswith("_Conv3dFunction")
    (gx,) = torch.autograd.grad(y.square().sum(), xg)
    (ref,) = torch.autograd.grad(F.conv3d(xg, w4, stride=2, padding=1).square().sum(), xg)
    torch.testing.assert_close(gx, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert conv3d(x, w1).grad_fn is None
    assert conv3d(x.double(), w1.double()).grad_fn.name() == "ConvolutionBackward0"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv3d(x, w1).dtype == torch.bfloat16


def _conv_node(y: torch.Tensor):
    """The ConvolutionBackward0 node behind ``y`` (through the layout copy of the channels-last path)."""
    node = y.grad_fn
    while node is not None and node.name() != "ConvolutionBackward0":
        node = node.next_functions[0][0]
    return node


@pytest.mark.parametrize("shape, cout, kernel, padding", [
    ((4, 8, 12, 12, 12), 4, (3, 3, 3), (1, 1, 1)),  # G^A / G^L: 3³ same
    ((2, 4, 6, 6, 3), 32, (2, 2, 2), (1, 1, 1)),  # G^H's sub-pixel kernel, 8 × 4 output channels
    ((2, 32, 5, 5, 5), 32, (3, 3, 3), (1, 1, 1)),  # the widest layer that takes the path
])
def test_few_channel_stride_1_layers_run_channels_last_with_pytorch_s_values_and_gradients(shape, cout, kernel,
                                                                                           padding):
    torch.manual_seed(4)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(cout, shape[1], *kernel, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    y = conv3d(x, w, b, 1, padding)
    node = _conv_node(y)
    assert node._saved_input.is_contiguous(memory_format=torch.channels_last_3d)  # the path was taken
    assert not node._saved_input.is_contiguous() and y.is_contiguous()  # ... and the caller's layout kept
    ref = F.conv3d(x, w, b, 1, padding)
    # float32 sums of up to 864 terms, in another order: tolerances relative to the largest value
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.detach().abs().max()))
    g = torch.randn_like(ref)
    for o, r in zip(_grads(lambda *a: conv3d(*a, 1, padding), x, w, b, g),
                    _grads(lambda *a: F.conv3d(*a, 1, padding), x, w, b, g)):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5 * float(r.abs().max()))
    # differentiable again (R1 differentiates D's input gradient with respect to the weights)
    def r1(fn):
        (gx,) = torch.autograd.grad(fn(x, w).square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), w)[0]
    ref_r1 = r1(lambda a, c: F.conv3d(a, c, None, 1, padding))
    torch.testing.assert_close(r1(lambda a, c: conv3d(a, c, None, 1, padding)), ref_r1, rtol=1e-5,
                               atol=1e-5 * float(ref_r1.abs().max()))


def test_wider_or_strided_layers_keep_the_default_layout(monkeypatch):
    torch.manual_seed(5)
    x = torch.randn(2, 33, 4, 4, 4, requires_grad=True)
    w = torch.randn(8, 33, 3, 3, 3, requires_grad=True)
    assert conv3d(x, w, padding=1).grad_fn.name().startswith("_Conv3dFunction")  # 33 input channels
    x4 = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    w4 = torch.randn(8, 4, 4, 4, 4, requires_grad=True)
    assert conv3d(x4, w4, stride=2, padding=1).grad_fn.name().startswith("_Conv3dFunction")  # strided
    import medgen.families.conv3d as module

    monkeypatch.setattr(module, "CHANNELS_LAST", False)  # the switch the benchmark turns
    w3 = torch.randn(4, 4, 3, 3, 3, requires_grad=True)
    assert conv3d(x4, w3, padding=1).grad_fn.name().startswith("_Conv3dFunction")
