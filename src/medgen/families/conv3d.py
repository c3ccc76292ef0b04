"""3D convolution whose CPU gradients are computed as convolutions PyTorch runs fast.

:func:`conv3d` and :class:`Conv3d` are ``torch.nn.functional.conv3d`` and ``torch.nn.Conv3d`` with the
same arguments, parameters and state dict; the forward pass is PyTorch's own. On the CPU in float32
outside autocast, two gradients are computed differently:

* the weight gradient (of every layer but the channels-last ones below): as the convolution of the input
  with the output gradient, batch and channel axes swapped and the stride of the layer turned into a
  dilation (:func:`weight_gradient`)::

    ∂L/∂W[o, i, k] = Σ_b Σ_p  g[b, o, p] · x_pad[b, i, s·p + k]
                   = conv3d(x_padᵀ, gᵀ, dilation=s)[i, o, k]        (ᵀ: batch and channel axes swapped)

* the input gradient of a strided layer with few input channels (every kernel edge a multiple of its
  stride, at most :data:`PHASED_MAX_IN_CHANNELS` input channels): as one stride-1 convolution of the
  output gradient whose output channels are the stride's phases (:func:`strided_input_gradient`).
  Other layers keep PyTorch's input gradient.

Why: PyTorch's CPU backward pass of a 3D convolution (oneDNN) computes these gradients several times
more slowly than the forward pass of a convolution with the same multiply-adds, most of all for the
few-channel, strided convolutions of the demo-scale networks (a discriminator's first layer on a
one-channel volume). Measured on 2 CPU cores (benchmarks/conv3d_backward.py): forward + backward of
HA-GAN ``tiny``'s layers up to 3-4× faster, a 64³ ``tiny`` training iteration about 1.2× faster.
Nothing like it exists in MONAI or PyTorch.

Stride-1 layers with few channels (at most :data:`CHANNELS_LAST_MAX_CHANNELS` in and out) take neither
of the gradients above: they are PyTorch's own convolution, forward and backward, on the input and weight
in the channels-last memory layout (``torch.channels_last_3d``), the output handed back in the usual
layout. oneDNN's kernels for that layout run these layers 1.5-3× faster than on the default one, most of
all in the backward pass (8 → 4 channels at 32³, batch 4, one thread: 64 against 26 ms for forward +
backward), where the weight gradient above mostly loses to PyTorch's (0.86-0.97× at 2 threads); the layout copies
cost about a millisecond. A ``--lowres-factor 2`` training iteration (G^A and G^L at 32³) runs 1.38× faster
than without this; at the default factor 4 the change is inside the run-to-run spread
(benchmarks/results/conv3d-backward-cpu-2026-12-03.md). Wider layers are as fast or slower in that layout
(64 → 256 channels at 8³: 19 against 20 ms) and keep the default one.

Both gradients stay differentiable (the R1 penalty differentiates D's input gradient again): they are
built from differentiable operations. Elsewhere (CUDA, other dtypes, autocast, groups, dilation,
string padding) the convolution is the plain ``torch.nn.functional.conv3d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_Triple = tuple[int, int, int]

# False: always PyTorch's own convolution (benchmarks/conv3d_backward.py measures both in one run)
ENABLED = True


def _triple(v: int | tuple[int, ...] | list[int]) -> _Triple:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)
    if len(t) != 3:
        raise ValueError(f"conv3d: expected one or three values, got {v!r}")
    return (int(t[0]), int(t[1]), int(t[2]))


def weight_gradient(x: torch.Tensor, grad: torch.Tensor, kernel: _Triple, stride: _Triple,
                    padding: _Triple) -> torch.Tensor:
    """∂L/∂W [O, I, *kernel] of ``conv3d(x, W, stride=stride, padding=padding)`` (groups 1, dilation 1)
    for the output gradient ``grad`` [B, O, *out]: a convolution over the batch (module docstring)."""
    w = torch.conv3d(x.transpose(0, 1), grad.transpose(0, 1), None, 1, padding, stride)  # [I, O, ≥ kernel]
    return w[:, :, : kernel[0], : kernel[1], : kernel[2]].transpose(0, 1)


def strided_input_gradient(grad: torch.Tensor, weight: torch.Tensor, shape: torch.Size, stride: _Triple,
                           padding: _Triple) -> torch.Tensor:
    """∂L/∂x [B, I, *shape[2:]] of ``conv3d(x, W, stride=stride, padding=padding)`` (groups 1, dilation 1, every
    kernel edge a multiple of its stride) for the output gradient ``grad`` [B, O, *out], as one stride-1
    convolution (module docstring).

    Along an axis with kernel k = s·K, input voxel m = s·q + r of the padded input receives
    Σ_j W[s·j + r] · g[q − j] (j < K): for each phase r a K-tap convolution of g. The s1·s2·s3 phases are
    the output channels of one convolution of g (padded by K − 1 in front) with the flipped, transposed
    sub-kernels W[:, :, r1::s1, r2::s2, r3::s3]; interleaving them and cutting the padding off gives ∂L/∂x.
    """
    in_ch = weight.shape[1]
    taps = [weight.shape[2 + d] // stride[d] for d in range(3)]
    size = [int(n) for n in shape[2:]]
    q = [(size[d] + padding[d] - 1) // stride[d] + 1 for d in range(3)]  # phase positions needed per axis
    phases = [weight[:, :, r1::stride[0], r2::stride[1], r3::stride[2]]
              for r1 in range(stride[0]) for r2 in range(stride[1]) for r3 in range(stride[2])]
    w = torch.cat([ph.flip(2, 3, 4).transpose(0, 1) for ph in phases])  # [S·I, O, K1, K2, K3]
    pad: list[int] = []
    for d in (2, 1, 0):  # F.pad's order: last axis first
        pad += [taps[d] - 1, max(0, q[d] - grad.shape[2 + d])]
    h = torch.conv3d(F.pad(grad, pad), w)[:, :, : q[0], : q[1], : q[2]]  # [B, S·I, q1, q2, q3]
    b = grad.shape[0]
    h = h.reshape(b, stride[0], stride[1], stride[2], in_ch, *q).permute(0, 4, 5, 1, 6, 2, 7, 3)
    h = h.reshape(b, in_ch, q[0] * stride[0], q[1] * stride[1], q[2] * stride[2])
    return h[:, :, padding[0]: padding[0] + size[0], padding[1]: padding[1] + size[1],
             padding[2]: padding[2] + size[2]]


# Stride-1 layers with at most this many input and output channels run in the channels-last layout
# (module docstring); measured on one thread at 8³-32³: up to 8 → 32 channels faster, 32 → 128 and
# 64 → 256 slower.
CHANNELS_LAST_MAX_CHANNELS = 32
# False: stride-1 layers as the others (benchmarks/conv3d_backward.py measures both in one run)
CHANNELS_LAST = True


def _channels_last(weight_shape: torch.Size | tuple[int, ...], stride: _Triple) -> bool:
    """Whether the convolution runs in the channels-last layout: stride 1, few channels."""
    return CHANNELS_LAST and stride == (1, 1, 1) and max(weight_shape[0], weight_shape[1]) <= CHANNELS_LAST_MAX_CHANNELS


# strided_input_gradient is used for layers with at most this many input channels: on 2 CPU cores it took
# 1.7 instead of 8.8 ms (1 channel), 3.9 instead of 11.4 (2), 1.5 instead of 2.5 (4), the same at 8 and
# longer from 16 on than PyTorch's (the phases' convolution then has 8 × as many, small, output channels)
PHASED_MAX_IN_CHANNELS = 4


def _phased(weight_shape: torch.Size | tuple[int, ...], stride: _Triple) -> bool:
    """Whether the input gradient is computed by :func:`strided_input_gradient`: a stride above 1, every
    kernel edge a multiple of its stride, at most :data:`PHASED_MAX_IN_CHANNELS` input channels."""
    kernel = tuple(weight_shape[2:])
    return (max(stride) > 1 and all(k % s == 0 for k, s in zip(kernel, stride))
            and weight_shape[1] <= PHASED_MAX_IN_CHANNELS)


class _Conv3dFunction(torch.autograd.Function):
    """conv3d with :func:`weight_gradient` and, for strided kernels, :func:`strided_input_gradient` in the
    backward pass (PyTorch's input gradient otherwise)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: _Triple, padding: _Triple):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return torch.conv3d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        gx = gw = gb = None
        if ctx.needs_input_grad[0] and _phased(weight.shape, stride):
            gx = strided_input_gradient(grad, weight, x.shape, stride, padding)
        elif ctx.needs_input_grad[0]:  # PyTorch's own input gradient (differentiable: convolution_backward)
            gx = torch.ops.aten.convolution_backward(grad, x, weight, None, list(stride), list(padding), [1, 1, 1],
                                                     False, [0, 0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = weight_gradient(x, grad, tuple(weight.shape[2:]), stride, padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3, 4))
        return gx, gw, gb, None, None


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``torch.nn.functional.conv3d``, with the faster CPU gradients where they apply (module docstring)."""
    cpu_training = (
        ENABLED and x.device.type == "cpu" and x.dim() == 5 and x.dtype == weight.dtype == torch.float32
        and groups == 1 and not isinstance(padding, str) and _triple(dilation) == (1, 1, 1)
        and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
    )
    if cpu_training and (weight.requires_grad or x.requires_grad) and _channels_last(weight.shape, _triple(stride)):
        cl = torch.channels_last_3d
        y = F.conv3d(x.contiguous(memory_format=cl), weight.contiguous(memory_format=cl), bias, stride, padding)
        return y.contiguous()
    if cpu_training and (weight.requires_grad or (x.requires_grad and _phased(weight.shape, _triple(stride)))):
        return _Conv3dFunction.apply(x, weight, bias, _triple(stride), _triple(padding))
    return F.conv3d(x, weight, bias, stride, padding, dilation, groups)


class Conv3d(nn.Conv3d):
    """``torch.nn.Conv3d`` computed by :func:`conv3d` (same parameters, state dict and results up to
    float rounding of the gradients)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        return conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
