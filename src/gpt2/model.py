"""The GPT-2 model: one flat file, in the spirit of nanoGPT's model.py.

Shapes use B = batch, T = sequence length (tokens), C = n_embd channels,
H = n_head, D = C // H head size, V = vocab_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.fused_loss import IGNORE_INDEX, fused_linear_cross_entropy

# IGNORE_INDEX (-1, from gpt2.fused_loss, which shares it): targets with this value are left out of the loss
# (padding in batched evaluation).
__all__ = ["GPT", "IGNORE_INDEX", "KVCache", "optimizer_param_groups"]


@dataclass
class KVCache:
    """Keys and values of every layer for incremental decoding, one row per sequence.

    ``k`` and ``v`` have shape (n_layer, B, H, max_len, D); ``lengths`` (B,) says how many positions of
    each row are filled. A forward pass with the cache writes row b's T new keys/values at positions
    ``lengths[b] ...`` and advances ``lengths`` by T, so a caller feeds only the new tokens. Rows may
    have different lengths (requests of a server batch), and one rule says what a query sees: the keys
    of its own row up to its own position (see :class:`CausalSelfAttention`). That rule also makes
    truncation free: lowering ``lengths[b]`` forgets row b's later positions (they are masked until
    overwritten), which is how a row slides its window or rewinds rejected draft tokens.
    """

    k: torch.Tensor
    v: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def empty(
        cls, config: GPTConfig, batch_size: int, max_len: int, device: torch.device | str, dtype: torch.dtype
    ) -> KVCache:
        if max_len > config.block_size:
            raise GPT2Error(f"KV cache of {max_len} positions exceeds the context window ({config.block_size})")
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        k, v = torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        return cls(k, v, torch.zeros(batch_size, dtype=torch.long, device=device))

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) positions of T new tokens per row: ``lengths[b] + 0 ... T-1``."""
        return self.lengths[:, None] + torch.arange(T, device=self.lengths.device)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention of block ``layer`` (0-based; it is this block's slice of a KVCache)."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        # q, k, v projections for all heads in one matmul (GPT-2's c_attn layout, so HF weights load directly)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE_INIT = True  # type: ignore[assignment]  # a marker read by GPT._init_weights
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout  # on the attention weights, inside SDPA
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, H, T, D)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is None:
            # Training/eval: SDPA picks the flash (GPU) or fused (CPU) kernel; is_causal avoids materialising a mask.
            # SDPA has no train/eval mode of its own: dropout_p must be 0 outside training.
            dropout_p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # Write the new keys/values at each row's own positions, then attend over the whole cache with one
            # visibility rule: the query at position p sees its row's keys at positions 0..p. It covers a prefill
            # (lengths 0), a one-token step and rows at different lengths; later slots (stale or empty) are
            # masked.
            pos = cache.positions(T)  # (B, T)
            rows = torch.arange(B, device=x.device)[:, None]
            cache.k[self.layer, rows, :, pos] = k.transpose(1, 2).to(cache.k.dtype)  # (B, T, H, D) at [b, :, pos]
            cache.v[self.layer, rows, :, pos] = v.transpose(1, 2).to(cache.v.dtype)
            visible = torch.arange(cache.max_len, device=x.device) <= pos[:, :, None]  # (B, T, max_len)
            y = F.scaled_dot_product_attention(q, cache.k[self.layer], cache.v[self.layer], attn_mask=visible[:, None])
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        # GPT-2 was trained with the tanh approximation of GELU; using the exact erf form would change its logits.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE_INIT = True  # type: ignore[assignment]  # as above
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Pre-norm (GPT-2's change from the original Transformer) keeps a clean residual
    path from the output back to the embeddings, which is what makes deep stacks train.
    """

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class Trunk(nn.ModuleDict):
    """The modules under ``transformer.`` (the names GPT-2 checkpoints use); the annotations type their access."""

    wte: nn.Embedding
    wpe: nn.Embedding
    drop: nn.Dropout
    h: nn.ModuleList
    ln_f: nn.LayerNorm


class GPT(nn.Module):
    """GPT-2: token + learned position embeddings, n_layer blocks, final LayerNorm, tied output head.

    ``config.dropout`` > 0 drops (in training mode only) the embedding sum, the attention weights and each
    residual branch's output, as nanoGPT and HF's embd/attn/resid_pdrop. Dropout modules hold no weights,
    so checkpoints are the same with or without it; at 0 (``nn.Dropout(0)`` returns its input) every
    result is bit-identical to a model without dropout.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = Trunk(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (as in GPT-2): the output projection reuses the token embedding. It saves
        # V*C parameters (38.6M at 124M) and the shared matrix gets gradient from both ends.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_SCALE_INIT", False):
                # Each block adds two projections (attention, MLP) onto the residual stream, so its
                # variance grows with 2*n_layer additions; scaling their init by 1/sqrt(2*n_layer)
                # keeps the activations at the output the same size whatever the depth (GPT-2 paper, 2.3).
                std *= (2 * self.config.n_layer) ** -0.5
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward) at sequence length ``seq_len``.

        6*N for the matmuls with the N weights (2 forward, 4 backward) plus 12*L*C*T for
        the attention scores and the weighted sum (PaLM appendix B). 124M at T=1024: ~0.86 GFLOP.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        return 6 * self.num_parameters() + 12 * cfg.n_layer * cfg.n_embd * T

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        logits_at: int | torch.Tensor | None = None,
        fused_loss: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits for the tokens ``idx`` (B, T) and, given ``targets`` (B, T) of token ids, the mean
        cross-entropy loss over targets != -1 (None without targets).

        ``logits_at`` selects the positions that get logits, which sets the logits' shape. The output
        layer and its (B, T, V) result are most of the cost for small models (~30% at 124M), so callers
        that read a few positions ask for just those:

        * None: every position -> (B, T, V);
        * an int ``p``: position ``p`` of every row, negative counting from the end (generation asks
          for -1, the next-token distribution) -> (B, 1, V);
        * a (B, T) bool tensor: the positions where it is True, in row-major order (scoring asks for
          the continuation tokens) -> (N, V), N = ``logits_at.sum()``.

        The loss needs every position's logits, so ``targets`` requires ``logits_at=None``.
        ``fused_loss=True`` (with ``targets``) computes the loss in chunks of rows without materialising
        the logits (gpt2.fused_loss; faster on CPU, equal up to float rounding) and returns ``(None, loss)``.
        With ``kv_cache``, ``idx`` holds only the new tokens of each row; row b's go to positions
        ``kv_cache.lengths[b] ...`` and the cache advances by T.
        """
        B, T = idx.shape
        if logits_at is not None and targets is not None:
            raise GPT2Error("GPT.forward: the loss needs the logits of every position; pass logits_at=None")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        end = T
        if kv_cache is not None:
            pos = kv_cache.positions(T)
            end = int(kv_cache.lengths.max()) + T
            if end > kv_cache.max_len:
                raise GPT2Error(f"KV cache full: {end} positions needed, {kv_cache.max_len} allocated")
        if end > self.config.block_size:
            raise GPT2Error(f"sequence of {end} tokens exceeds the context window ({self.config.block_size} tokens)")
        if kv_cache is not None:  # attend over the positions in use (up to the longest row), not all allocated
            kv_cache = KVCache(kv_cache.k[:, :, :, :end], kv_cache.v[:, :, :, :end], kv_cache.lengths)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, kv_cache)
        x = self.transformer.ln_f(x)
        if kv_cache is not None:
            kv_cache.lengths += T  # in place: a cache over some rows of a bigger one advances those rows
        if logits_at is not None:
            return self.lm_head(_select_positions(x, logits_at)), None
        if fused_loss and targets is not None:
            return None, fused_linear_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1))
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return logits, loss


def _select_positions(x: torch.Tensor, logits_at: int | torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` (B, T, C) that ``GPT.forward``'s ``logits_at`` names: (B, 1, C) or (N, C)."""
    B, T, _ = x.shape
    if isinstance(logits_at, int):
        if not -T <= logits_at < T:
            raise GPT2Error(f"GPT.forward: logits_at={logits_at} is outside the {T} input positions")
        p = logits_at % T
        return x[:, p : p + 1, :]  # a slice, not a gather: a view of x, no copy
    if logits_at.dtype != torch.bool or tuple(logits_at.shape) != (B, T):
        raise GPT2Error(
            f"GPT.forward: logits_at must be an int or a ({B}, {T}) bool tensor, "
            f"got {logits_at.dtype} of shape {tuple(logits_at.shape)}"
        )
    return x[logits_at]


def optimizer_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay the >=2-D weights (matmuls, embeddings), not biases or LayerNorm gains.

    Decaying a LayerNorm gain or a bias pulls it towards 0, which only fights the normalisation;
    the GPT-3 paper and nanoGPT decay just the weight matrices.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
