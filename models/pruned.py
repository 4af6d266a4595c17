"""The pruned random network as torch modules.

Each target layer becomes a :class:`TicketPair`: fan-out layer A, ReLU, combine layer B. Kept
weights follow ``torch.nn.utils.prune``'s naming: the random values live in ``weight_orig`` /
``bias_orig`` and a ``weight_mask`` / ``bias_mask`` buffer multiplies them. The masks are bool
and the product is formed inside ``forward`` (torch's prune stores float masks and the product
as an attribute: three copies of every weight, which for a 10M-weight target with n = 12 is
gigabytes). :func:`to_torch_prune` converts a network to torch's own convention (then
``prune.remove`` makes the ticket permanent); :func:`to_plain` gives plain modules with zeros.

Variants (identical outputs, tested): ``dense`` materialises the theorem's full random A
(hidden x d_in; a 1x1 conv for Conv2d targets) and B, and prunes all but the block entries of A;
``fanout`` holds only the block entries u (a per-input scaling, broadcast; channels-last for a
convolution, whose combine layer reads it so), and its combine layers hold no random values:
:class:`RegeneratedLinear` / :class:`RegeneratedConv2d` keep B's mask as bits and regenerate B from
the seed a block of output rows at a time at each use (:func:`models.random_net.stream`), so the
network costs its masks in memory, not n times the target.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune

from .fxgraph import CastLayer, with_modules
from .layers import GroupedLinear, grouped_linear
from .masks import PackedMask, as_tensor
from .random_net import LayerSpec, generate, row_slices, stream, units


class _InputGradient(torch.autograd.Function):
    """A masked layer's output with a gradient for its input only, keeping nothing of the layer for
    the backward pass: there each block of weight * mask is formed again and its vector-Jacobian
    product taken (a second forward per block; memory: one block, not the layer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "_Masked", apply, dim: int) -> torch.Tensor:
        ctx.layer, ctx.fn, ctx.dim = layer, apply, dim
        ctx.save_for_backward(x)
        return layer._apply_by_block(x, apply, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x, offset = torch.zeros_like(x), 0
        for w, b in ctx.layer._products_by_block(x.dtype):
            with torch.enable_grad():
                xx = x.detach().requires_grad_(True)
                y = ctx.fn(xx, w, b)
                (part,) = torch.autograd.grad(y, xx, grad.narrow(ctx.dim, offset, y.shape[ctx.dim]))
            grad_x += part
            offset += y.shape[ctx.dim]
        return grad_x, None, None, None


class _Masked:
    """Mixin: ``weight_orig``/``bias_orig`` parameters times bool ``weight_mask``/``bias_mask``."""

    def _init_masked(self, weight: torch.Tensor, bias: torch.Tensor, weight_mask: torch.Tensor, bias_mask: torch.Tensor):
        del self.weight, self.bias
        # the tensors are taken over, not copied: a pair's random values exist once in memory
        self.weight_orig = nn.Parameter(weight.detach())
        self.bias_orig = nn.Parameter(bias.detach())
        self.register_buffer("weight_mask", weight_mask.to(torch.bool).reshape(weight.shape))
        self.register_buffer("bias_mask", bias_mask.to(torch.bool).reshape(bias.shape))

    def blockwise(self, x: torch.Tensor, apply, dim: int) -> torch.Tensor:
        """``apply(x, weight * mask, bias * mask)`` in x's dtype; beyond :data:`CAST_BLOCK` weights (and
        without groups) a block of output rows at a time, the outputs joined along ``dim``. Where only
        the input needs a gradient (the adversarial search), the products are not kept for the
        backward pass but formed again there (:class:`_InputGradient`): a copy of the whole random
        network would otherwise be held per search."""
        if x.requires_grad and torch.is_grad_enabled() and not any(p.requires_grad for p in self.parameters(False)):
            return _InputGradient.apply(x, self, apply, dim)
        return self._apply_by_block(x, apply, dim)

    def _apply_by_block(self, x: torch.Tensor, apply, dim: int) -> torch.Tensor:
        parts = [apply(x, w, b) for w, b in self._products_by_block(x.dtype)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)  # one part: no copy

    def _products_by_block(self, dtype: torch.dtype):
        """(weight * mask, bias * mask) in ``dtype``: whole, or a block of output rows at a time."""
        shape = self.mask_shape
        if math.prod(shape) <= CAST_BLOCK or self.groups > 1:
            yield self.masked(dtype)
            return
        yield from self._blocks(_row_blocks(shape[0], math.prod(shape[1:])), dtype)

    @property
    def mask_shape(self) -> tuple[int, ...]:
        return tuple(self.weight_mask.shape)

    def _blocks(self, blocks: list[slice], dtype: torch.dtype | None):
        """(weight * mask, bias * mask) of each block of output rows, in ``dtype``."""
        for rows in blocks:
            w, b = self.weight_orig[rows] * self.weight_mask[rows], self.bias_orig[rows] * self.bias_mask[rows]
            yield (w, b) if dtype is None or w.dtype == dtype else (w.to(dtype), b.to(dtype))

    def _whole(self, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.weight_orig * self.weight_mask, self.bias_orig * self.bias_mask
        return (w, b) if dtype is None or w.dtype == dtype else (w.to(dtype), b.to(dtype))

    def masked(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """weight * mask and bias * mask, cast to ``dtype`` (exact: the mask is 0/1), so a float32
        network evaluates float64 inputs in float64 without a float64 copy of itself. Inside
        :func:`fixed_masks` formed once per dtype while the block's byte allowance lasts."""
        products = getattr(self, "_products", None)
        if products is not None and dtype in products:
            return products[dtype]
        w, b = self._whole(dtype)
        if products is not None:
            size = w.numel() * w.element_size() + b.numel() * b.element_size()
            if size <= self._allowance[0]:
                products[dtype] = (w, b)
                self._allowance[0] -= size
        return w, b


#: the most bytes of weight * mask products :func:`fixed_masks` keeps (the memory plan counts them)
MASK_CACHE_BYTES = 512 << 20


@contextmanager
def fixed_masks(model: nn.Module, max_bytes: int | None = None):
    """Within the block every masked layer of ``model`` forms weight * mask (per dtype) once
    instead of at every forward (and every layer of a view in another dtype,
    :class:`models.fxgraph.CastLayer`, its cast tensors): for many batches through a network that does not change
    (without gradients). The products kept are at most ``max_bytes`` (default
    :data:`MASK_CACHE_BYTES`) in all, first come first kept; the other layers (and layers cast
    block-wise, beyond :data:`CAST_BLOCK`) form theirs at every forward, so memory stays bounded
    for a random network of any size. LeNet-5, 10,000 inputs in float32: 1.5 s instead of 2.0 s."""
    layers = [m for m in model.modules() if isinstance(m, (_Masked, CastLayer))]
    allowance = [MASK_CACHE_BYTES if max_bytes is None else int(max_bytes)]
    for m in layers:
        m._products, m._allowance = {}, allowance
    try:
        yield model
    finally:
        for m in layers:
            del m._products, m._allowance


#: a masked layer with more weights than this forms weight * mask (and its cast) this many entries at
#: a time, over blocks of output rows: memory for the product is bounded by the block, not the layer
CAST_BLOCK = 1 << 24


def _row_blocks(rows: int, per_row: int) -> list[slice]:
    return row_slices(rows, per_row, CAST_BLOCK)


class _Regenerated(_Masked):
    """A combine layer B whose random values are not held: each use regenerates them from the seed a
    block of output rows at a time (:func:`models.random_net.stream`) and multiplies the block by its
    mask, so the layer costs its mask in memory, not its values. B's own biases are all pruned (0)."""

    def _init_regenerated(self, spec: LayerSpec, weight_mask: PackedMask | torch.Tensor, shape: tuple[int, ...]):
        del self.weight, self.bias
        self.spec = spec
        packed = weight_mask if isinstance(weight_mask, PackedMask) else PackedMask.of(weight_mask)
        self._shape = tuple(shape)
        self.register_buffer("weight_bits", torch.from_numpy(packed.reshape(*shape).bits))  # 1 bit an entry
        self.register_buffer("bias_mask", torch.zeros(shape[0], dtype=torch.bool))

    @property
    def mask_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def packed_mask(self) -> PackedMask:
        return PackedMask(self._shape, self.weight_bits.numpy())

    @property
    def weight_mask(self) -> torch.Tensor:
        """B's mask, unpacked whole."""
        return self.packed_mask.tensor()

    def _blocks(self, blocks: list[slice], dtype: torch.dtype | None):
        mask = self.packed_mask
        for rows, values in zip(blocks, stream(self.spec, blocks)):
            w = values["B"].reshape(-1, *self._shape[1:]) * mask.rows(rows)
            b = torch.zeros(rows.stop - rows.start)
            yield (w, b) if dtype is None else (w.to(dtype), b.to(dtype))

    def _whole(self, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        (w, b), = self._blocks([slice(0, self._shape[0])], dtype)
        return w, b

    def random_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """B's random weights and biases, regenerated whole (what ``weight_orig``/``bias_orig`` would hold)."""
        values = generate(self.spec)
        return values["B"].reshape(self._shape), values["b_bias"]


class MaskedLinear(_Masked, nn.Linear):
    """A masked Linear of the last dimension; with ``groups`` > 1 block-diagonal
    (:func:`models.layers.grouped_linear`: the combine layer of a grouped or diagonal pair)."""

    def __init__(self, weight, bias, weight_mask, bias_mask, groups: int = 1):
        nn.Linear.__init__(self, weight.shape[1] * groups, weight.shape[0], device="meta")
        self.groups = int(groups)
        self._init_masked(weight, bias, weight_mask, bias_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blockwise(x, lambda x, w, b: grouped_linear(x, w, b, self.groups), dim=-1)

    def plain(self) -> nn.Module:
        w, b = self.masked()
        if self.groups > 1:
            return GroupedLinear(w, b, self.groups)
        out = nn.Linear(self.in_features, self.out_features, device="meta").to_empty(device=w.device)
        out.weight, out.bias = nn.Parameter(w.detach().clone()), nn.Parameter(b.detach().clone())
        return out


class RegeneratedLinear(_Regenerated, MaskedLinear):
    """:class:`MaskedLinear` whose random values are regenerated from the seed at each use."""

    def __init__(self, spec: LayerSpec, weight_mask: PackedMask | torch.Tensor):
        shape = (spec.d_out, spec.hidden_group)
        nn.Linear.__init__(self, shape[1] * spec.groups, shape[0], device="meta")
        self.groups = spec.groups
        self._init_regenerated(spec, weight_mask, shape)


#: a float64 combine convolution on a CPU unfolds at most this many bytes of its input at once
UNFOLD_BYTES = 256 << 20


def _conv_output_size(size, kernel, stride, padding, dilation) -> tuple[int, ...]:
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))


class MaskedConv2d(_Masked, nn.Conv2d):
    def __init__(self, weight, bias, weight_mask, bias_mask, stride=1, padding=0, dilation=1, groups=1):
        nn.Conv2d.__init__(self, weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                           padding=padding, dilation=dilation, groups=groups, device="meta")
        self._init_masked(weight, bias, weight_mask, bias_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blockwise(x, self._conv, dim=1)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The convolution; in float64 on a CPU (whose float64 path unfolds the input: in_channels x
        kh x kw values per output pixel, 10 GB for one 224x224 input to a VGG-16 pair) summed over
        blocks of input channels whose unfolded input is at most :data:`UNFOLD_BYTES`."""
        pixels = math.prod(_conv_output_size(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation))
        per_channel = len(x) * math.prod(self.kernel_size) * pixels * x.element_size()
        step = max(1, UNFOLD_BYTES // max(per_channel, 1))
        if x.dtype != torch.float64 or x.device.type != "cpu" or self.groups > 1 or step >= x.shape[1]:
            return self._conv_forward(x, w, b)
        y = None
        for c in range(0, x.shape[1], step):
            part = F.conv2d(x[:, c:c + step], w[:, c:c + step], None, self.stride, self.padding, self.dilation)
            y = part if y is None else y.add_(part)
        return y + b.reshape(1, -1, 1, 1)

    def plain(self) -> nn.Conv2d:
        w, b = self.masked()
        out = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                        padding=self.padding, dilation=self.dilation, groups=self.groups,
                        device="meta").to_empty(device=w.device)
        out.weight, out.bias = nn.Parameter(w.detach().clone()), nn.Parameter(b.detach().clone())
        return out


class RegeneratedConv2d(_Regenerated, MaskedConv2d):
    """:class:`MaskedConv2d` whose random values are regenerated from the seed at each use."""

    def __init__(self, spec: LayerSpec, weight_mask: PackedMask | torch.Tensor):
        shape = (spec.d_out, spec.hidden_group, *spec.kernel)
        nn.Conv2d.__init__(self, shape[1] * spec.groups, shape[0], spec.kernel, stride=spec.stride,
                           padding=spec.padding, dilation=spec.dilation, groups=spec.groups, device="meta")
        self._init_regenerated(spec, weight_mask, shape)


class FanOut(_Masked, nn.Module):
    """The fan-out variant of A: unit (i, k) outputs u[i, k] * x_i (before the ReLU); the constant
    units output their bias. Same pruning convention as torch (``*_orig`` times ``*_mask``)."""

    def __init__(self, spec: LayerSpec, u: torch.Tensor, a_bias: torch.Tensor,
                 u_mask: torch.Tensor, a_bias_mask: torch.Tensor):
        super().__init__()
        self.conv = spec.kind == "conv2d"
        self.d_in, self.upi, self.n_const, self.groups = spec.d_in, spec.units_per_input, spec.n_const, spec.groups
        self.weight_orig = nn.Parameter(u.detach())  # (d_in, units_per_input), taken over
        self.bias_orig = nn.Parameter(a_bias.detach())  # (hidden,)
        self.register_buffer("weight_mask", u_mask.to(torch.bool))
        self.register_buffer("bias_mask", a_bias_mask.to(torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden units in the spec's layout: per conv group its fan-out units (input by input), then
        its constant units. A convolution's input is read channels-last (N, H, W, C) and its hidden
        units are returned in that memory layout (the combine convolution is faster on it)."""
        w, b = self.masked(x.dtype)
        b = b.view(self.groups, -1)  # (groups, hidden_group)
        fan = self.d_in * self.upi // self.groups
        features = x.movedim(1, -1) if self.conv else x  # features last
        h = (features.unsqueeze(-1) * w).reshape(*features.shape[:-1], self.groups, fan) + b[:, :fan]
        if self.n_const:
            h = torch.cat([h, b[:, fan:].expand(*h.shape[:-1], -1)], dim=-1)
        h = h.flatten(-2)
        return h.movedim(-1, 1) if self.conv else h


class TicketPair(nn.Module):
    """One target layer replaced by fan-out layer A, ReLU, combine layer B.

    An embedding's pair reads token ids: its input is the one-hot token (d_in = vocabulary), so
    only the token's own fan-out units are nonzero (the others output relu(0) = 0: their biases are
    pruned) and the fan-out variant gathers them and B's matching columns instead of forming the
    one-hot vector; the dense variant forms it. Either computes in float64 (token ids carry no
    precision to follow)."""

    def __init__(self, spec: LayerSpec, values: dict[str, torch.Tensor] | None, masks: dict[str, torch.Tensor],
                 variant: str = "fanout"):
        """``values``: the pair's random values (:func:`models.random_net.generate`; the dense variant
        needs them), or None: the fan-out variant then holds u and the constant units' biases and
        its combine layer regenerates B from the seed at each use (:class:`_Regenerated`)."""
        super().__init__()
        self.spec_name = spec.name
        self.embedding = spec.kind == "embedding"
        self.vocab, self.upi = spec.d_in, spec.units_per_input
        if self.embedding and (spec.has_bias or bool(masks["a_bias"].any())):
            raise ValueError(f"embedding pair {spec.name!r}: kept biases in A would make every token's units "
                             f"nonzero; an embedding pair keeps none")
        if variant not in ("fanout", "dense"):
            raise ValueError(f"`variant` must be 'fanout' or 'dense'; got {variant!r}")
        if values is None and variant == "dense":
            raise ValueError(f"pair {spec.name!r}: the dense variant holds its random values; pass them")
        if variant == "dense":
            a_mask = torch.zeros(spec.hidden, spec.d_in, dtype=torch.bool)
            inputs = torch.arange(spec.d_in).repeat_interleave(spec.units_per_input)
            a_mask[spec.fan_index().reshape(-1), inputs] = masks["u"].reshape(-1)
            if spec.kind != "conv2d":
                self.fan_out = MaskedLinear(values["A"], values["a_bias"], a_mask, masks["a_bias"])
            else:
                A = values["A"].reshape(spec.hidden, spec.d_in, 1, 1)
                self.fan_out = MaskedConv2d(A, values["a_bias"], a_mask, masks["a_bias"])
        else:  # the fan-out units' A biases are pruned: not drawn where the values are regenerated (0 here)
            head = values if values is not None else units(spec)
            self.fan_out = FanOut(spec, head["u"], torch.nan_to_num(head["a_bias"], nan=0.0), masks["u"],
                                  masks["a_bias"])
        self.relu = nn.ReLU()
        no_bias = torch.zeros(spec.d_out, dtype=torch.bool)  # B's biases are all pruned
        if values is None:
            self.combine = (RegeneratedConv2d if spec.kind == "conv2d" else RegeneratedLinear)(spec, masks["B"])
        elif spec.kind != "conv2d":
            self.combine = MaskedLinear(values["B"], values["b_bias"], as_tensor(masks["B"]), no_bias, groups=spec.groups)
        else:
            self.combine = MaskedConv2d(values["B"], values["b_bias"], as_tensor(masks["B"]), no_bias, stride=spec.stride,
                                        padding=spec.padding, dilation=spec.dilation, groups=spec.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding:
            return self._embed(x)
        h = self.relu(self.fan_out(x))
        if h.dim() != 4:
            return self.combine(h)
        # channels-last hidden units (FanOut's already are; one combine algorithm for both variants),
        # the output in the standard layout for the target's own ops after it (``view`` needs it)
        return self.combine(h.contiguous(memory_format=torch.channels_last)).contiguous()

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.fan_out, FanOut):  # dense: the one-hot token through A, ReLU, B
            return self.combine(self.relu(self.fan_out(F.one_hot(tokens, self.vocab).double())))
        u = torch.relu((self.fan_out.weight_orig * self.fan_out.weight_mask).double()[tokens])  # (..., upi)
        if not isinstance(self.combine, _Masked):  # made plain (to_plain): weight * mask is its weight
            blocks = [(self.combine.weight, None)]
        else:  # B * mask a block of output rows at a time: the tokens' columns of each
            blocks = self.combine._products_by_block(None)
        parts = [torch.einsum("d...k,...k->...d", w.reshape(len(w), self.vocab, self.upi)[:, tokens].double(), u)
                 for w, _ in blocks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def assemble(target: fx.GraphModule, specs: list[LayerSpec], masks: list[dict[str, torch.Tensor]],
             variant: str = "fanout") -> fx.GraphModule:
    """The pruned random network: the folded target's graph with every layer replaced by its pair.

    Parameter-free ops (ReLU, pooling, flatten, residual additions) stay where they are, so a
    target of l parametrised layers becomes 2 l. The result is float32, in eval mode. The fan-out
    variant holds the masks, u and the constant units' biases: every combine layer regenerates its
    random values from the seed where it is used (:class:`RegeneratedLinear`, :class:`RegeneratedConv2d`),
    so the network costs its masks in memory; the dense variant holds the theorem's full random A and B.
    """
    pairs = {spec.name: TicketPair(spec, generate(spec, dense=True) if variant == "dense" else None, mk, variant)
             for spec, mk in zip(specs, masks)}
    return with_modules(target, pairs).float().eval()


def _swap(root: nn.Module, make) -> nn.Module:
    for name, mod in list(root.named_modules()):
        if isinstance(mod, (MaskedLinear, MaskedConv2d)):
            root.set_submodule(name, make(mod))
    return root


def to_plain(pruned: nn.Module) -> nn.Module:
    """A copy with every masked layer replaced by a plain Linear/Conv2d holding weight * mask."""
    import copy

    return _swap(copy.deepcopy(pruned), lambda m: m.plain())


def to_torch_prune(pruned: nn.Module) -> nn.Module:
    """A copy in torch.nn.utils.prune's own convention (``prune.custom_from_mask``), so that
    ``prune.remove`` and other torch pruning tools apply."""
    import copy

    def convert(m):
        plain = m.plain()
        weight, bias = m.random_values() if isinstance(m, _Regenerated) else (m.weight_orig, m.bias_orig)
        with torch.no_grad():
            plain.weight.copy_(weight.reshape(plain.weight.shape))
            plain.bias.copy_(bias)
        prune.custom_from_mask(plain, "weight", m.weight_mask)
        prune.custom_from_mask(plain, "bias", m.bias_mask)
        return plain

    return _swap(copy.deepcopy(pruned), convert)
