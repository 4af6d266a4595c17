"""Tiny targets for the construction tests (importable as module:tests.nets:Class)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyCNN(nn.Module):
    """Conv+BN with padding, a strided conv, a residual add, both poolings, flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h)) + h  # residual
        h = self.avg(self.pool(torch.relu(self.conv3(h))))
        return self.fc(self.drop(h.view(h.size(0), -1)))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    net = TinyCNN().eval()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.2, 0.2)
    return net


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 4, bias=False)
        self.fc3 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def tiny_mlp(seed: int = 0) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP().eval()


class WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.fc(x))


class WithTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class LoneBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.bn(x))


def dilated_cnn(seed: int = 0) -> nn.Sequential:
    """Dilation and stride with zero padding, biases everywhere, average pooling."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2),
    ).eval()


class BasicBlock(nn.Module):
    """A ResNet basic block written the usual way: functional relu, in-place residual add."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out += x
        return F.relu(out)


class TinyResNet(nn.Module):
    """Nested modules (Sequential stem, a residual block), functional pooling and flatten."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU())
        self.block = BasicBlock(3)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x):
        h = F.max_pool2d(self.block(self.stem(x)), 2)
        return self.fc(self.drop(torch.flatten(h, 1)))


def tiny_resnet(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    net = TinyResNet().eval()
    with torch.no_grad():
        net.block.bn1.running_mean.uniform_(-0.3, 0.3)
        net.block.bn1.running_var.uniform_(0.5, 1.5)
    return net


class ScaledOutput(nn.Module):
    """Uses a parameter outside Linear/Conv2d/BatchNorm (refused for TorchScript targets)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(x) * self.scale


class Repeated(nn.Module):
    """A loop in forward (refused for TorchScript targets)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.times = 2

    def forward(self, x):
        for _ in range(self.times):
            x = torch.relu(self.fc(x))
        return x


class ShiftedOutput(nn.Module):
    """A constant added after a layer (the bound shifts the interval, not the error)."""

    def __init__(self, shift: float):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 2)
        self.shift = shift

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + self.shift


def shifted_output(shift: float, seed: int = 0) -> ShiftedOutput:
    torch.manual_seed(seed)
    return ShiftedOutput(shift).eval()


class _Block18(nn.Module):
    """ResNet basic block with an optional strided 1x1 projection (torchvision's layout)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ResNet18Like(nn.Module):
    """ResNet-18's layers and sizes (11.7M parameters) for 224x224 inputs; fixed 7x7 average pooling
    stands in for the adaptive one."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, 1)
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
            blocks.append(_Block18(c_in, c_out, stride))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.avg = nn.AvgPool2d(7)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avg(self.blocks(x)), 1))


class ChainCNN(nn.Module):
    """A chain (no branches): Conv+BN, ReLU, max pooling, Conv, ReLU, average pooling, view with
    x.size(0), Dropout, Linear, ReLU, Linear - the ops models.crown's relaxation handles."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(4 * 2 * 2, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.bn1(self.conv1(x))))
        h = self.avg(torch.relu(self.conv2(h)))
        h = self.drop(h.view(h.size(0), -1))
        return self.fc2(torch.relu(self.fc1(h)))


def chain_cnn(seed: int = 0) -> ChainCNN:
    torch.manual_seed(seed)
    net = ChainCNN()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


def width_mlp(width: int = 6, classes: int = 2) -> nn.Sequential:
    """A factory (not a class) with keyword arguments, for `--arch module:tests.nets:width_mlp(width=...)`."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, classes)).eval()


def not_a_module(**kwargs):
    return {"kwargs": kwargs}


class Activations(nn.Module):
    """Every kept activation with a bound rule, as modules, functions and methods, and softmax."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 8)
        self.fc4 = nn.Linear(8, 8)
        self.fc5 = nn.Linear(8, 4)
        self.mods = nn.ModuleList([nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.LeakyReLU(0.1), nn.ReLU6(), nn.Mish(),
                                   nn.ELU(), nn.Softplus(), nn.Hardtanh(-0.5, 2.0), nn.Hardsigmoid()])

    def forward(self, x):
        h = self.fc1(x)
        h = self.mods[0](h) + self.mods[1](h) + self.mods[2](h) + self.mods[3](h) + self.mods[5](h)
        h = self.fc2(h)
        h = torch.nn.functional.gelu(h, approximate="tanh") + torch.tanh(h) + h.sigmoid() + self.mods[4](h)
        h = self.fc3(h)
        h = self.mods[6](h) + self.mods[7](h) + self.mods[8](h) + torch.nn.functional.leaky_relu(h, 0.2)
        h = self.fc4(self.mods[9](h) + torch.nn.functional.silu(h))
        return torch.softmax(self.fc5(h), dim=1)


class AdaptivePoolCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.Hardswish()
        self.avg = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        h = self.avg(self.act(self.conv(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_max_pool2d(h, 1) + h, 1))


class WithPReLU(nn.Module):
    """PReLU, single and per channel (prelu(x) = relu(x) - a relu(-x): its weight times an activation)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.act1 = nn.PReLU(3)
        self.fc = nn.Linear(12, 2)
        self.act = nn.PReLU()
        with torch.no_grad():
            self.act1.weight.copy_(torch.tensor([-0.4, 0.1, 0.6]))

    def forward(self, x):
        return self.act(self.fc(torch.flatten(self.act1(self.conv(x)), 1)))


class WithSin(nn.Module):
    """sin has no bound rule here: refused."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.sin(self.fc(x))


class OptionAShortcut(nn.Module):
    """A CIFAR ResNet block with the option-A shortcut: x[:, :, ::2, ::2] padded with zero channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        short = torch.nn.functional.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2), "constant", 0)
        out = torch.relu(self.bn2(self.conv2(h)) + short)
        out = torch.nn.functional.avg_pool2d(out, out.size(3))
        return self.fc(out.view(out.size(0), -1))


class Arithmetic(nn.Module):
    """Products of activations, differences, division by a constant, negation, cat, transpose, mean."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(4, 6)
        self.fc3 = nn.Linear(12, 3)

    def forward(self, x):
        a = torch.relu(self.fc1(x))
        b = torch.tanh(self.fc2(x))
        h = torch.cat([a * b - a / 2.0, -b + 1.0 - a], dim=1)
        h = h.view(h.size(0), 3, 4).transpose(1, 2).reshape(h.size(0), -1)
        return self.fc3(h) * 0.5 - h.mean(dim=1, keepdim=True)


class BatchIndexing(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)[0]


class BatchCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        return torch.cat([h, h], dim=0)


class ForwardImpl(nn.Module):
    """forward calls another method, as torchvision's models do (self._forward_impl)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self._features(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_impl(x)


def forward_impl(seed: int = 0) -> ForwardImpl:
    torch.manual_seed(seed)
    return ForwardImpl().eval()


class GroupedCNN(nn.Module):
    """A grouped convolution (groups=2), a depthwise one with bias (groups=channels) and BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = torch.relu(self.dw(h))
        return self.fc(torch.flatten(h, 1))


def grouped_cnn(seed: int = 0) -> GroupedCNN:
    torch.manual_seed(seed)
    net = GroupedCNN()
    with torch.no_grad():
        net.bn2.running_mean.uniform_(-0.2, 0.2)
        net.bn2.running_var.uniform_(0.5, 1.5)
    return net.eval()


class NormNet(nn.Module):
    """Elementwise affine parameters that cannot be folded: GroupNorm and LayerNorm weight and bias,
    a BatchNorm after a ReLU (2d and 1d), layer scale (a (C, 1, 1) parameter times the activation)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.bn = nn.BatchNorm2d(4)
        self.gamma = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.ln = nn.LayerNorm(5)
        self.bn1 = nn.BatchNorm1d(5)

    def forward(self, x):
        h = self.bn(torch.relu(self.gn(self.conv(x)))) * self.gamma
        return self.bn1(torch.relu(self.ln(self.fc(h.flatten(1)))))


def norm_net(seed: int = 0) -> NormNet:
    torch.manual_seed(seed)
    net = NormNet()
    for m in net.modules():  # non-trivial statistics and affine parameters
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


class EncoderClassifier(nn.Module):
    """Tokens (batch, T, 3) -> Linear -> nn.TransformerEncoder (batch_first, GELU) -> mean -> Linear."""

    def __init__(self, d: int = 8, heads: int = 2, depth: int = 1, norm_first: bool = False):
        super().__init__()
        self.embed = nn.Linear(3, d)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.1, activation="gelu", batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def encoder_classifier(seed: int = 0, **kw) -> EncoderClassifier:
    torch.manual_seed(seed)
    return EncoderClassifier(**kw).eval()


class AttentionOnly(nn.Module):
    """nn.MultiheadAttention without normalisation: every op has a bound rule (matmul, softmax)."""

    def __init__(self, d: int = 6, heads: int = 2, mask: bool = False, batch_first: bool = True):
        super().__init__()
        self.mask = mask
        self.register_buffer("causal", torch.ones(4, 4, dtype=torch.bool).triu(1))  # for 4 tokens
        self.att = nn.MultiheadAttention(d, heads, batch_first=batch_first)
        self.fc = nn.Linear(d, 2)

    def forward(self, x):
        h, _ = self.att(x, x, x, attn_mask=self.causal if self.mask else None, need_weights=False)
        return self.fc(torch.relu(h + x)).mean(dim=1)


def attention_only(seed: int = 0, **kw) -> AttentionOnly:
    torch.manual_seed(seed)
    return AttentionOnly(**kw).eval()


class TinyViT(nn.Module):
    """A vision transformer as torchvision writes one: patch convolution, a learned class token
    concatenated, a (1, T, D) position table added, pre-norm encoder block, the class token's output."""

    def __init__(self, d: int = 8, patch: int = 4, image: int = 8):
        super().__init__()
        self.d = d
        self.conv_proj = nn.Conv2d(1, d, patch, stride=patch)
        tokens = (image // patch) ** 2 + 1
        self.class_token = nn.Parameter(torch.randn(1, 1, d))
        self.pos_embedding = nn.Parameter(0.1 * torch.randn(1, tokens, d))
        self.ln_1 = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(d, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        n, c, h, w = x.shape
        torch._assert(h == w, "square images")
        x = self.conv_proj(x).reshape(n, self.d, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embedding
        y = self.ln_1(x)
        y, _ = self.attention(y, y, y, need_weights=False)
        x = x + y
        x = x + self.mlp(x)
        return self.head(x[:, 0])


def tiny_vit(seed: int = 0) -> TinyViT:
    torch.manual_seed(seed)
    return TinyViT().eval()


def _eval_identity(x, p, training=True):
    """Stands for torchvision's stochastic_depth in tests (the identity when training is False;
    wrapped, so torch.fx records the call as torchvision's is)."""
    return x if not training else x * 0


torch.fx.wrap("_eval_identity")


class ShuffleBlock(nn.Module):
    """ShuffleNet's pieces: chunk along channels, channel shuffle by view/transpose, in-place add."""

    def __init__(self, training: bool = False):
        super().__init__()
        self.training_arg = training
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.branch = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        a, b = h.chunk(2, dim=1)
        h = torch.cat([a, torch.relu(self.branch(b))], dim=1)
        n, c, hh, ww = h.size()
        h = torch.transpose(h.view(n, 2, c // 2, hh, ww), 1, 2).contiguous().view(n, -1, hh, ww)
        h += _eval_identity(h, 0.1, self.training_arg)
        return self.fc(torch.flatten(h, 1))


def shuffle_block(seed: int = 0, training: bool = False) -> ShuffleBlock:
    torch.manual_seed(seed)
    return ShuffleBlock(training).eval()


class FlattenAll(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.flatten(self.fc(x))


class TokenClassifier(nn.Module):
    """Token ids (batch, T) -> Embedding -> + (1, T, D) position table -> pre-norm encoder layer ->
    mean -> Linear: a BERT-like model on token inputs."""

    def __init__(self, vocab: int = 20, d: int = 8, tokens: int = 5, norm: bool = True, reshaped: bool = False):
        super().__init__()
        self.reshaped = reshaped  # the embedding reads ids.view(-1, T), as GPT-2 does
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.1 * torch.randn(1, tokens, d))
        self.norm = norm
        self.ln = nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, 3)

    def forward(self, ids):
        x = self.embed(ids.view(-1, ids.shape[-1]) if self.reshaped else ids) + self.pos
        y = self.ln(x) if self.norm else x
        y, _ = self.att(y, y, y, need_weights=False)
        return self.head((x + y).mean(dim=1))


def token_classifier(seed: int = 0, **kw) -> TokenClassifier:
    torch.manual_seed(seed)
    return TokenClassifier(**kw).eval()


def conv1d_net(seed: int = 0) -> nn.Sequential:
    """Conv1d with padding, then a grouped, strided, dilated Conv1d, then a Linear: (batch, 2, 12) inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 4, 3, stride=2, dilation=2, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4, 3)).eval()


class SdpaNet(nn.Module):
    """What Hugging Face traces look like: token and position embeddings (position ids a buffer), an
    additive attention mask built from torch.ones of the input's size, F.scaled_dot_product_attention."""

    def __init__(self, vocab: int = 12, d: int = 6, tokens: int = 4):
        super().__init__()
        self.words = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(tokens, d)
        self.register_buffer("position_ids", torch.arange(tokens)[None, :])
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.head = nn.Linear(d, 3)

    def forward(self, ids):
        b, t = ids.size()
        x = self.words(ids) + self.positions(torch.narrow(self.position_ids, 1, 0, t))
        mask = ((1.0 - torch.ones((b, t))) * -1e4 + 0.3 * torch.arange(t))[:, None, None, :]
        h = nn.functional.scaled_dot_product_attention(self.q(x)[:, None], self.k(x)[:, None], self.v(x)[:, None],
                                                       attn_mask=mask)
        return self.head(h[:, 0].mean(dim=1))


def sdpa_net(seed: int = 0) -> SdpaNet:
    torch.manual_seed(seed)
    return SdpaNet().eval()


class PowerNet(nn.Module):
    """Integer powers between layers, as gelu_new (GPT-2) has them: x ** 3, torch.pow(x, 2), x.pow(3)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.fc1(x)
        h = h + 0.1 * h ** 3
        h = self.fc2(torch.pow(h, 2.0))
        return self.fc3(h.pow(3))


def power_net(seed: int = 0) -> PowerNet:
    torch.manual_seed(seed)
    return PowerNet().eval()


class GatheredTable(nn.Module):
    """A parameter gathered by an index buffer and added to an activation (Swin's relative position
    bias, in small): refused naming the rule it lacks."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.table = nn.Parameter(torch.randn(3))
        self.register_buffer("index", torch.tensor([0, 1, 2, 1]))

    def forward(self, x):
        return self.fc(x) + self.table[self.index]


class ParameterFunction(nn.Module):
    """A bias computed by an unsupported function from a small MLP of a coordinate buffer, no input
    reaching it (Swin V2's continuous position bias, in small): refused naming what it reads."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.mlp = nn.Linear(2, 4)
        self.register_buffer("coords", torch.randn(3, 2))

    def forward(self, x):
        return self.fc(x) + torch.logsumexp(self.mlp(self.coords), 0)


class FloatConstant(nn.Module):
    """A constant made in float64 whatever the model's dtype and added to an activation (Hugging Face
    BERT's extended attention mask: ones cast to the dtype traced, times float64's min)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        keep = torch.ones((x.shape[0], 3), device=x.device).to(torch.float64)
        return self.fc(x) + (1.0 - keep) * torch.finfo(torch.float64).min


def tiny_gpt2(vocab_size: int = 1000, seed: int = 0):
    """A tiny GPT-2 (2 layers, n_embd 128, 2 heads, 64 positions), random weights; the calling test is
    skipped where transformers' fx tracer cannot trace it (not installed: transformers >= 5; 4.57
    builds GPT-2's masks with vmap)."""
    import pytest

    pytest.importorskip("transformers.utils.fx", reason="transformers' fx tracer (transformers < 5) is not installed")
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("4.57"):
        pytest.skip(f"transformers {transformers.__version__}: GPT-2's masks are built with vmap, not fx-traceable")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=2, vocab_size=vocab_size, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


class Rolled(nn.Module):
    """A cyclic shift of the feature map between layers (Swin's shifted windows, in small)."""

    def __init__(self, batch_dim: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 5 * 5, 4)
        self.dims = (0, 2) if batch_dim else (2, 3)

    def forward(self, x):
        h = torch.roll(self.conv(x), shifts=(1, -2), dims=self.dims)
        return self.fc(torch.relu(h).roll(1, 3).flatten(1))


def rolled(seed: int = 0, **kw) -> Rolled:
    torch.manual_seed(seed)
    return Rolled(**kw).eval()


class FloatWithPositions(nn.Module):
    """A float input of T tokens plus an Embedding of the positions arange(T), read from a buffer:
    a constant of the graph with no batch dimension (T = 3 looks like a stacked batch of three)."""

    def __init__(self, tokens: int = 5, dim: int = 4):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.pos = nn.Embedding(tokens, dim)
        self.head = nn.Linear(dim, 2)
        self.register_buffer("ids", torch.arange(tokens))

    def forward(self, x):
        return self.head(torch.relu(self.fc(x) + self.pos(self.ids)))


def float_with_positions(seed: int = 0, **kw) -> FloatWithPositions:
    torch.manual_seed(seed)
    return FloatWithPositions(**kw).eval()
