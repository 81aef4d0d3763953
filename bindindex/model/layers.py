"""Transformer building blocks of ImageBind, for inference only.

Module and parameter names follow the reference implementation (Meta's
``imagebind.models.transformer`` and ``helpers``) so that its checkpoint loads
with ``load_state_dict(strict=True)``. Attention is written with
``scaled_dot_product_attention`` in batch-first layout, but its parameters are
named like ``torch.nn.MultiheadAttention`` because that is what the checkpoint
stores. Dropout and drop path are left out because they are identities at
inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Every LayerNorm inside the trunks and heads uses this epsilon. The audio stem's LayerNorm
# is the exception: it keeps PyTorch's default of 1e-5.
LAYER_NORM_EPS = 1e-6

# Ratio of the MLP hidden width to the transformer width.
MLP_RATIO = 4


class SelfAttention(nn.Module):
    """Multi-head self-attention with the parameter layout of nn.MultiheadAttention.

    With ``add_bias_kv`` one learned key and one learned value are appended to the
    projected keys and values, as ``nn.MultiheadAttention(add_bias_kv=True)`` does.
    The query count stays the same, so the output has the input's length.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, add_bias_kv: bool) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        # Rows 0:D project queries, D:2D keys and 2D:3D values.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.bias_k: nn.Parameter | None
        self.bias_v: nn.Parameter | None
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim))
        else:
            self.bias_k = None
            self.bias_v = None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attend over ``x`` (B, L, D); ``attn_mask`` is an additive (L, L) float mask."""
        batch, length, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, L, D)

        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(batch, 1, dim)], dim=1)  # (B, L+1, D)
            v = torch.cat([v, self.bias_v.expand(batch, 1, dim)], dim=1)  # (B, L+1, D)
            if attn_mask is not None:
                # Every query may attend to the extra key, so its mask column is zero.
                attn_mask = F.pad(attn_mask, (0, 1))  # (L, L+1)

        keys = k.shape[1]  # S = L, or L + 1 with bias_kv
        q = q.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)
        k = k.view(batch, keys, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S, d)
        v = v.view(batch, keys, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S, d)
        if attn_mask is not None:
            attn_mask = attn_mask.to(dtype=q.dtype)  # (L, S), broadcast over B and H

        # The default scale 1/sqrt(head_dim) is the one nn.MultiheadAttention uses.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, L, d)
        out = out.transpose(1, 2).reshape(batch, length, dim)  # (B, L, D)
        return self.out_proj(out)  # (B, L, D)


class Mlp(nn.Module):
    """Feed-forward layer: Linear, exact (erf) GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, L, D) -> (B, L, hidden) -> (B, L, D)
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm_1(x)), then x + mlp(norm_2(x))."""

    def __init__(self, dim: int, num_heads: int, *, add_bias_kv: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, num_heads, add_bias_kv=add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, MLP_RATIO * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        # x: (B, L, D)
        x = x + self.attn(self.norm_1(x), attn_mask)
        x = x + self.mlp(self.norm_2(x))
        return x  # (B, L, D)


class Transformer(nn.Module):
    """Stack of blocks with an optional LayerNorm in front (the vision trunk has one)."""

    def __init__(
        self,
        dim: int,
        num_blocks: int,
        num_heads: int,
        *,
        pre_norm: bool,
        add_bias_kv: bool,
    ) -> None:
        super().__init__()
        # A Sequential so that the checkpoint key is pre_transformer_layer.0.weight. Trunks
        # without the LayerNorm have no parameters there, so the attribute is None.
        self.pre_transformer_layer = (
            nn.Sequential(nn.LayerNorm(dim, eps=LAYER_NORM_EPS)) if pre_norm else None
        )
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, add_bias_kv=add_bias_kv) for _ in range(num_blocks)
        )

    def forward(self, tokens: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        # tokens: (B, L, D)
        if self.pre_transformer_layer is not None:
            tokens = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        return tokens  # (B, L, D)


class SelectToken(nn.Module):
    """Pick one token position from a (B, L, D) sequence."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.index]  # (B, L, D) -> (B, D)


def class_token_head(dim: int, out_dim: int) -> nn.Sequential:
    """Build the vision and audio head: LayerNorm, class token, projection without bias.

    Index 1 has no parameters, which is why the checkpoint keys are ``0.*`` and ``2.weight``.
    """
    return nn.Sequential(
        nn.LayerNorm(dim, eps=LAYER_NORM_EPS),
        SelectToken(0),
        nn.Linear(dim, out_dim, bias=False),
    )


class EndOfTextHead(nn.Module):
    """Text head: the token at the end-of-text position, then LayerNorm and projection."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(dim, eps=LAYER_NORM_EPS),
            nn.Linear(dim, out_dim, bias=False),
        )

    def forward(self, x: Tensor, eot_index: Tensor) -> Tensor:
        # x: (B, L, D); eot_index: (B,) int64
        rows = torch.arange(x.shape[0], device=x.device)  # (B,)
        return self.proj(x[rows, eot_index])  # (B, D) -> (B, out)


class L2Normalize(nn.Module):
    """Scale each vector to unit L2 norm along the last dimension."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2.0, dim=-1)  # (B, out)


class LogitScale(nn.Module):
    """Multiply by min(exp(log_logit_scale), max_scale).

    The text tower learns its scale, so the value is a parameter in the checkpoint.
    The audio tower's scale is fixed, so the value is a persistent buffer. Both forms
    are state-dict entries named ``log_logit_scale``. The product is computed in
    float32 so that a bfloat16 model does not round the scale.
    """

    def __init__(self, init_scale: float, *, learnable: bool, max_scale: float = 100.0) -> None:
        super().__init__()
        self.init_scale = init_scale
        self.learnable = learnable
        self.max_scale = max_scale
        if learnable:
            self.log_logit_scale = nn.Parameter(torch.empty(()))
        else:
            self.register_buffer("log_logit_scale", torch.empty(()))

    @property
    def init_log_value(self) -> float:
        """Value of ``log_logit_scale`` before training: log(init_scale)."""
        return math.log(self.init_scale)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.log_logit_scale.float().exp().clamp(max=self.max_scale)  # ()
        return x.float() * scale  # (B, out)
