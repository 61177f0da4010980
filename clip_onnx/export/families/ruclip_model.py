"""RuCLIP's CLIP network, reimplemented so its checkpoints load unchanged.

The `ruclip` package pins huggingface_hub==0.2.1 and cannot be installed next to
a modern hub client, so we carry the architecture ourselves.  Parameter names,
shapes and arithmetic follow ruclip 0.0.2's ``ruclip/model.py``; the test suite
loads that file by path and checks both towers give identical outputs on the
same state_dict.

Two deliberate differences.  The transformers run batch-first, with attention
written as one packed projection and ``scaled_dot_product_attention``, where
ruclip runs ``nn.MultiheadAttention`` sequence-first: the same parameters and
the same arithmetic (outputs are bit-identical here), but the exported graph
has half the Transposes, and its attention is the pattern that
``export/attention.py`` fuses for the INT8 graphs.  And text pooling uses ``argmax(input_ids == eos_id)``
instead of ``torch.where(...)[1]``.  Both pick the first EOS position when every
row has exactly one, but the former keeps a static output shape and exports to
ONNX.  It is *not* ``argmax(input_ids)``: RuCLIP's EOS id is 3, far from the
largest id, which is the bug of an earlier public RuCLIP ONNX export.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype, as CLIP does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = LayerNorm(d_model)
        # A buffer would add a key to the state_dict and break checkpoint loading.
        self.attn_mask = attn_mask

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        # x is [batch, seq, width]. Cutting the mask to the sequence length gives ruclip's mask
        # at context_length, and its top-left corner (the same causal mask) for shorter inputs.
        batch, seq, width = x.shape
        heads = self.attn.num_heads
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)
        q, k, v = qkv.view(batch, seq, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = self.attn_mask[:seq, :seq].to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return F.linear(
            out.transpose(1, 2).reshape(batch, seq, width), self.attn.out_proj.weight, self.attn.out_proj.bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):
    """RuCLIP's two-tower model; constructor arguments are the keys of its config.json."""

    def __init__(
        self,
        embed_dim: int,
        image_resolution: int,
        vision_layers: int,
        vision_width: int,
        vision_patch_size: int,
        context_length: int,
        vocab_size: int,
        transformer_width: int,
        transformer_heads: int,
        transformer_layers: int,
        eos_id: int = 3,
    ):
        super().__init__()
        self.eos_id = eos_id
        self.context_length = context_length
        self.visual = VisionTransformer(
            image_resolution, vision_patch_size, vision_width, vision_layers, vision_width // 64, embed_dim
        )
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal)
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        self._init_parameters()

    def _init_parameters(self) -> None:
        width, layers = self.transformer.width, self.transformer.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=width**-0.5 * (2 * layers) ** -0.5)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=width**-0.5 * (2 * layers) ** -0.5)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values.type(self.dtype))

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.positional_embedding[: input_ids.shape[1]]
        x = self.token_embedding(input_ids).type(self.dtype) + positions.type(self.dtype)
        x = self.transformer(x)
        x = self.ln_final(x).type(self.dtype)
        eos_position = (input_ids == self.eos_id).int().argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), eos_position] @ self.text_projection
