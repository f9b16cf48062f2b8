"""diffill's own bidirectional transformer for masked-diffusion infilling.

One attention rule makes the context cache exact: a *context* token attends only to
context tokens, a *hole* token attends to everything.  Context keys and values are then
a pure function of the context, so they are computed once per request (`prefill`) and
every denoising step is a forward over the hole alone (`forward_hole`).  Training uses
the same rule (the "hole" is the span being denoised; for plain whole-sequence masked
diffusion the whole sequence is the hole, i.e. full attention).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    dim: int = 256
    n_layers: int = 6
    n_heads: int = 4
    ffn_hidden: int = 704  # SwiGLU hidden, ~8/3 * dim rounded to a multiple of 64
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        data = json.loads(Path(path).read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


# Keys and values of the context, one (k, v) pair per layer, each [B, heads, C, head_dim].
ContextCache = list[tuple[torch.Tensor, torch.Tensor]]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for explicit positions [L] -> [L, head_dim/2] each, or [B, L] -> [B, 1, L, head_dim/2]
    (one row of positions per sequence, broadcast over the heads)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv
    if positions.dim() == 2:
        angles = angles[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, H, L, D]; rotate the two halves (GPT-NeoX layout).
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, mask=None, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Returns (output, (k, v)).  `past` holds context keys/values the queries may also see."""
        q, k, v = self.project(x, cos, sin)
        kv = (k, v)
        if past is not None:
            k = torch.cat([past[0].expand(k.shape[0], -1, -1, -1), k], dim=2)
            v = torch.cat([past[1].expand(v.shape[0], -1, -1, -1), v], dim=2)
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), kv

    def forward_into(self, x, cos, sin, keys: torch.Tensor, values: torch.Tensor, n_context: int):
        """A hole step against `keys`/`values` [>=B, heads, n_context + L, head_dim] whose first
        n_context positions already hold the context: only x's own keys and values are written."""
        q, k, v = self.project(x, cos, sin)
        B, L = x.shape[0], x.shape[1]
        keys[:B, :, n_context:n_context + L] = k
        values[:B, :, n_context:n_context + L] = v
        return self._merge(F.scaled_dot_product_attention(q, keys[:B], values[:B]))

    def forward_split(self, x, cos, sin, n_context: int):
        """The attention rule for x = [context (n_context) | hole]: two calls, no mask.  Context
        queries see context keys; hole queries see all keys.  Exactly `forward` with the
        rule's boolean mask, and lets SDPA pick its fastest (flash) kernels."""
        q, k, v = self.project(x, cos, sin)
        if n_context == 0:
            return self._merge(F.scaled_dot_product_attention(q, k, v))
        c = n_context
        ctx = F.scaled_dot_product_attention(q[:, :, :c], k[:, :, :c], v[:, :, :c])
        hole = F.scaled_dot_product_attention(q[:, :, c:], k, v)
        return self._merge(torch.cat([ctx, hole], dim=2))

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, L, D = y.shape
        return self.out(y.transpose(1, 2).reshape(B, L, H * D))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin, mask=None, past=None):
        h, kv = self.attn(self.attn_norm(x), cos, sin, mask, past)
        x = x + h
        return x + self.ffn(self.ffn_norm(x)), kv

    def forward_into(self, x, cos, sin, keys, values, n_context: int):
        x = x + self.attn.forward_into(self.attn_norm(x), cos, sin, keys, values, n_context)
        return x + self.ffn(self.ffn_norm(x))

    def forward_split(self, x, cos, sin, n_context: int):
        x = x + self.attn.forward_split(self.attn_norm(x), cos, sin, n_context)
        return x + self.ffn(self.ffn_norm(x))


def attention_mask(hole: torch.Tensor) -> torch.Tensor:
    """hole [B, L] bool -> SDPA bool mask [B, 1, L, L]: query i sees key j iff j is context or i is hole."""
    return (~hole[:, None, :] | hole[:, :, None])[:, None]


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.apply(self._init)
        for block in self.blocks:  # scale residual projections down with depth (GPT-2)
            nn.init.normal_(block.attn.out.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))
            nn.init.normal_(block.ffn.down.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(h), self.embed.weight)  # tied input/output embeddings

    def _rope(self, positions: torch.Tensor):
        return rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta)

    def forward(self, ids: torch.Tensor, hole: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Full forward: ids [B, L], hole [B, L] or [L] bool -> logits [B, L, V]."""
        return self.logits(self.hidden(ids, hole, positions))

    def hidden(self, ids: torch.Tensor, hole: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [B, L, dim] (training projects only the masked ones onto the vocabulary)."""
        B, L = ids.shape
        if hole.dim() == 1:
            hole = hole.expand(B, L)
        positions = torch.arange(L, device=ids.device) if positions is None else positions
        cos, sin = self._rope(positions)
        mask = None if bool(hole.all()) else attention_mask(hole)
        x = self.embed(ids)
        for block in self.blocks:
            x, _ = block(x, cos, sin, mask)
        return x

    def hidden_split(self, ids: torch.Tensor, positions: torch.Tensor, n_context: int) -> torch.Tensor:
        """Training's fast path: ids [B, L] laid out as [context (n_context) | hole], positions [B, L]
        their places in the sequence (RoPE makes the physical order free) -> hidden [B, L, dim].
        Same function as `hidden` with the hole mask, without building the mask."""
        cos, sin = self._rope(positions)
        x = self.embed(ids)
        for block in self.blocks:
            x = block.forward_split(x, cos, sin, n_context)
        return x

    @torch.no_grad()
    def prefill(self, ctx_ids: torch.Tensor, ctx_positions: torch.Tensor) -> ContextCache:
        """Context keys/values: context attends only to context, so this is exact and reusable."""
        cos, sin = self._rope(ctx_positions)
        x = self.embed(ctx_ids)
        cache: ContextCache = []
        for block in self.blocks:
            x, kv = block(x, cos, sin)
            cache.append(kv)
        return cache

    @torch.no_grad()
    def forward_hole(self, hole_ids: torch.Tensor, hole_positions: torch.Tensor,
                     cache: ContextCache | None, select: torch.Tensor | None = None) -> torch.Tensor:
        """One denoising step: hole_ids [B, N] attend to themselves and the cached context -> logits [B, N, V].
        cache None means there is no context at all (an empty file).  With `select` [B, N] bool only
        those positions go through the output layer -> [select.sum(), V]: committed slots and
        padding still shape the others, but nobody reads their logits.  A hole's many steps take
        `hole_steps` instead, which keeps its buffers between them."""
        return self.hole_steps(cache, hole_positions).logits(hole_ids, select)

    def hole_steps(self, cache: ContextCache | None, hole_positions: torch.Tensor) -> "HoleSteps":
        """The denoising steps of one hole against the context `cache` (`HoleSteps`)."""
        return HoleSteps(self, cache, hole_positions)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path, dtype: torch.dtype = torch.bfloat16,
             max_file_bytes: int | None = None) -> None:
        """config.json + model.safetensors, or model-00001-of-0000N.safetensors files of at most
        `max_file_bytes` each (for transports that cap file sizes)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.cfg.to_json(directory / "config.json")
        for old in directory.glob("model*.safetensors"):
            old.unlink()
        state = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        parts: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, tensor in state.items():
            nbytes = tensor.numel() * tensor.element_size()
            if max_file_bytes and parts[-1] and size + nbytes > max_file_bytes:
                parts.append({})
                size = 0
            parts[-1][name] = tensor
            size += nbytes
        if len(parts) == 1:
            save_file(parts[0], str(directory / "model.safetensors"))
            return
        for i, part in enumerate(parts, 1):
            save_file(part, str(directory / f"model-{i:05d}-of-{len(parts):05d}.safetensors"))

    @staticmethod
    def weight_files(directory: str | Path) -> list[Path]:
        return sorted(Path(directory).glob("model*.safetensors"))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "Transformer":
        directory = Path(directory)
        model = cls(ModelConfig.from_json(directory / "config.json"))
        state = {}
        for path in cls.weight_files(directory):
            state.update(load_file(str(path)))
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model.to(device).eval()


class HoleSteps:
    """The denoising steps of one hole against a fixed context, without per-step copies.

    Concatenating the whole context's keys and values in front of the hole's in every layer,
    and rebuilding the hole's RoPE tables, each step (`Block.forward` with `past`) took about an
    eighth of an as-you-type suggestion on a loaded CPU (512 context tokens, 6 rows of 14
    slots).  Here the tables are made once, and each layer keeps one key and one value buffer
    [rows, heads, context + hole, head_dim] whose context part is written once; a step
    writes only the hole's own keys and values.  Every row sees the same context, so a step
    over fewer rows (some finished) uses the buffers' first rows.  Same logits as the full
    forward with the hole mask (tests/engine/test_engine.py)."""

    def __init__(self, model: Transformer, cache: ContextCache | None, hole_positions: torch.Tensor):
        self.model, self.cache, self.positions = model, cache, hole_positions
        self.cos, self.sin = model._rope(hole_positions)
        self.n_context = 0 if cache is None else cache[0][0].shape[2]
        self.buffers: list[tuple[torch.Tensor, torch.Tensor]] = []  # made at the first step, for its rows

    def _buffers(self, rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.buffers and self.buffers[0][0].shape[0] >= rows:
            return self.buffers
        cfg, n = self.model.cfg, self.n_context + self.positions.shape[-1]
        self.buffers = []
        for layer in range(cfg.n_layers):
            like = self.model.embed.weight if self.cache is None else self.cache[layer][0]
            keys = like.new_empty((rows, cfg.n_heads, n, cfg.head_dim))
            values = torch.empty_like(keys)
            if self.cache is not None:
                keys[:, :, : self.n_context] = self.cache[layer][0]
                values[:, :, : self.n_context] = self.cache[layer][1]
            self.buffers.append((keys, values))
        return self.buffers

    @torch.no_grad()
    def logits(self, hole_ids: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """hole_ids [B <= rows, N] -> logits [B, N, V], or [select.sum(), V] (`forward_hole`)."""
        x = self.model.embed(hole_ids)
        for block, (keys, values) in zip(self.model.blocks, self._buffers(hole_ids.shape[0])):
            x = block.forward_into(x, self.cos, self.sin, keys, values, self.n_context)
        return self.model.logits(x if select is None else x[select])
