"""The policy/value transformer: one Llama-family trunk, two heads.

A decoder-only transformer written as pure-functional Flax Linen modules:
token embedding, rotary position embedding (RoPE, HF "rotate-half" layout;
optionally Llama-3.1's "llama3" frequency scaling, ``rope_inv_freq``),
RMSNorm, grouped-query attention and a SwiGLU MLP, with optionally tied input
and output embeddings. On the shared trunk sit

* the policy head: next-token logits ``[B, T, V]``;
* the value head: one scalar per position ``[B, T]``, the critic's estimate
  of the value of the state ending at that token.

Axis letters used in shapes and einsums:
  B batch, T new tokens, S key/cache slots, D model width, N query heads,
  K key/value heads (N = K * G), G query heads per kv head, H head dim,
  F MLP width, V vocabulary, L layers.

Two calling modes share one code path:

* ``cache=None``: the tokens attend causally to themselves (training, scoring).
* ``cache=KVCache``: the new tokens' keys/values are written into the cache at
  ``cache_index`` (per example) and the tokens attend to every valid cache slot
  at or before their own (incremental decoding, search).

Both give the same logits for the same tokens (tested).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Architecture hyper-parameters (Llama/Qwen family)."""

  vocab_size: int
  num_layers: int = 2
  embed_dim: int = 64          # D
  num_heads: int = 4           # N
  num_kv_heads: int = 2        # K (grouped-query attention when K < N)
  head_dim: int = 16           # H
  mlp_dim: int = 256           # F
  max_len: int = 128           # longest sequence the config is meant for
  rope_theta: float = 10_000.0
  # RoPE frequency scaling: "none" (the plain frequencies above), or "llama3"
  # (Llama-3.1/3.2: low frequencies divided by ``rope_scaling_factor``, high
  # ones kept, the band between interpolated; see ``rope_inv_freq``). The
  # other three fields are read only with "llama3".
  rope_scaling: str = "none"
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192   # the context length pretrained with (HF's
                                      # original_max_position_embeddings)
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False       # Qwen2 uses biases on q/k/v projections
  dtype: str = "float32"       # compute dtype, e.g. "bfloat16" on accelerators
  param_dtype: str = "float32"
  # Rematerialise each block in the backward pass (``nn.remat``): activations
  # kept per block drop from ~34 D + 5 N S to ~2 D bytes per token, for one more
  # forward pass. Needed to train 7B+ models at the paper's batch; no effect on
  # parameters, outputs or gradients.
  remat: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "num_layers", "embed_dim", "num_heads",
                 "num_kv_heads", "head_dim", "mlp_dim", "max_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"TransformerConfig.num_heads ({self.num_heads}) must be a multiple of "
          f"num_kv_heads ({self.num_kv_heads})")
    if self.head_dim % 2:
      raise ValueError(f"TransformerConfig.head_dim must be even for RoPE, got {self.head_dim}")
    _check_rope_scaling(self)

  @classmethod
  def from_dict(cls, d: Any) -> "TransformerConfig":
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
    return cls(**d)

  def num_params(self, include_value_head: bool = True) -> int:
    d, n, k, h, f, v = (self.embed_dim, self.num_heads, self.num_kv_heads,
                        self.head_dim, self.mlp_dim, self.vocab_size)
    attn = d * n * h + 2 * d * k * h + n * h * d
    if self.qkv_bias:
      attn += n * h + 2 * k * h
    per_layer = attn + 3 * d * f + 2 * d
    total = v * d + self.num_layers * per_layer + d
    if not self.tie_embeddings:
      total += d * v
    if include_value_head:
      total += d + 1
    return total


ROPE_SCALINGS = ("none", "llama3")


def _check_rope_scaling(cfg: TransformerConfig) -> None:
  """Raises naming the field for an unknown scaling or llama3 factors it cannot use."""
  if cfg.rope_scaling not in ROPE_SCALINGS:
    raise ValueError(f"TransformerConfig.rope_scaling must be one of {ROPE_SCALINGS}, got "
                     f"{cfg.rope_scaling!r}")
  if cfg.rope_scaling != "llama3":
    return
  for name in ("rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
      raise ValueError(f"TransformerConfig.{name} must be a positive number, got {value!r}")
  if not cfg.rope_high_freq_factor > cfg.rope_low_freq_factor:
    raise ValueError(
        f"TransformerConfig.rope_high_freq_factor ({cfg.rope_high_freq_factor}) must exceed "
        f"rope_low_freq_factor ({cfg.rope_low_freq_factor}) for llama3 rope scaling")
  value = cfg.rope_original_max_len
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(
        f"TransformerConfig.rope_original_max_len must be a positive int, got {value!r}")


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer, plus which slots hold a real token.

  Attributes:
    k: ``[L, B, S, K, H]`` keys (already rotated by RoPE).
    v: ``[L, B, S, K, H]`` values.
    mask: ``[B, S]`` True where a slot holds a real (non-pad) token.
  """

  k: Float[Array, "L B S K H"]
  v: Float[Array, "L B S K H"]
  mask: Bool[Array, "B S"]

  @classmethod
  def init(cls, config: TransformerConfig, batch: int, length: int) -> "KVCache":
    shape = (config.num_layers, batch, length, config.num_kv_heads, config.head_dim)
    dtype = jnp.dtype(config.dtype)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               mask=jnp.zeros((batch, length), bool))

  @property
  def length(self) -> int:
    return self.k.shape[2]

  def nbytes(self) -> int:
    return int(self.k.nbytes + self.v.nbytes + self.mask.nbytes)


@flax.struct.dataclass
class TransformerOutput:
  logits: Float[Array, "B T V"]   # policy head, float32
  values: Float[Array, "B T"]     # value head, float32
  cache: KVCache | None           # updated cache (None when called without one)


class RMSNorm(nn.Module):
  eps: float = 1e-6
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


def llama3_inv_freq(inv_freq: Float[Array, "H2"], factor: float, low_freq_factor: float,
                    high_freq_factor: float, original_max_len: int) -> Float[Array, "H2"]:
  """Llama-3.1's frequency scaling (transformers' ``_compute_llama3_parameters``).

  With ``L = original_max_len`` and wavelength ``w = 2 pi / f`` of each
  frequency ``f``: ``w > L / low_freq_factor`` gives ``f / factor``,
  ``w < L / high_freq_factor`` keeps ``f``, and between them
  ``(1 - s) f / factor + s f`` with ``s = (L / w - low) / (high - low)``.

  Args:
    inv_freq: ``[H/2]`` float32 unscaled inverse frequencies.
  Returns:
    ``[H/2]`` float32 scaled inverse frequencies.
  """
  wavelen = 2 * jnp.pi / inv_freq
  low_wavelen = original_max_len / low_freq_factor
  high_wavelen = original_max_len / high_freq_factor
  scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
  smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled).astype(jnp.float32)


def rope_inv_freq(config: TransformerConfig) -> Float[Array, "H2"]:
  """``[H/2]`` float32 RoPE inverse frequencies of ``config`` (scaled as it says)."""
  half = config.head_dim // 2
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  if config.rope_scaling == "llama3":
    inv_freq = llama3_inv_freq(inv_freq, config.rope_scaling_factor,
                               config.rope_low_freq_factor, config.rope_high_freq_factor,
                               config.rope_original_max_len)
  return inv_freq


def apply_rope(x: Float[Array, "B T N H"], positions: Int[Array, "B T"],
               theta: float, inv_freq: Float[Array, "H2"] | None = None
               ) -> Float[Array, "B T N H"]:
  """Rotary embedding in the HF Llama layout (the two halves rotate together).

  ``inv_freq`` (``[H/2]``, e.g. from :func:`rope_inv_freq`) overrides the
  plain frequencies ``theta ** (-i / (H/2))``.
  """
  half = x.shape[-1] // 2
  if inv_freq is None:
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq           # [B T H/2]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query self-attention with an optional KV cache."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Float[Array, "B T D"], positions: Int[Array, "B T"],
               mask: Bool[Array, "B T S"],
               kv: tuple[Array, Array] | None = None,
               cache_index: Int[Array, "B"] | None = None,
               ) -> tuple[Float[Array, "B T D"], tuple[Array, Array]]:
    """Returns the attention output and the keys/values the queries attended to.

    Without ``kv`` the keys are the tokens' own (``S == T``). With ``kv`` (one
    layer's cache, ``[B, S, K, H]`` each) the new keys/values are written at
    ``cache_index`` and the queries attend over all ``S`` slots.
    """
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    dense = lambda feats, name, bias: nn.DenseGeneral(  # noqa: E731
        feats, use_bias=bias, dtype=dt, param_dtype=pdt, name=name)
    q = dense((cfg.num_heads, cfg.head_dim), "q_proj", cfg.qkv_bias)(x)       # B T N H
    k = dense((cfg.num_kv_heads, cfg.head_dim), "k_proj", cfg.qkv_bias)(x)    # B T K H
    v = dense((cfg.num_kv_heads, cfg.head_dim), "v_proj", cfg.qkv_bias)(x)    # B T K H
    inv_freq = rope_inv_freq(cfg)                                              # H/2
    q = apply_rope(q, positions, cfg.rope_theta, inv_freq)
    k = apply_rope(k, positions, cfg.rope_theta, inv_freq)

    if kv is not None:
      write = jax.vmap(lambda c, new, i: jax.lax.dynamic_update_slice(c, new, (i, 0, 0)))
      k = write(kv[0], k.astype(kv[0].dtype), cache_index)                   # B S K H
      v = write(kv[1], v.astype(kv[1].dtype), cache_index)

    b, t = q.shape[:2]
    g = cfg.num_heads // cfg.num_kv_heads
    q = q.reshape(b, t, cfg.num_kv_heads, g, cfg.head_dim)                     # B T K G H
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(cfg.head_dim))
    logits = jnp.where(mask[:, None, None, :, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, cfg.num_heads, cfg.head_dim)
    out = nn.DenseGeneral(cfg.embed_dim, axis=(-2, -1), use_bias=False, dtype=dt,
                          param_dtype=pdt, name="o_proj")(out)
    return out, (k, v)


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
    cfg = self.config
    dense = lambda feats, name: nn.Dense(  # noqa: E731
        feats, use_bias=False, dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype), name=name)
    h = nn.silu(dense(cfg.mlp_dim, "gate_proj")(x)) * dense(cfg.mlp_dim, "up_proj")(x)
    return dense(cfg.embed_dim, "down_proj")(h)


class Block(nn.Module):
  """Pre-norm decoder block: x + attn(norm(x)); x + mlp(norm(x))."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x, positions, mask, kv=None, cache_index=None):
    cfg = self.config
    pdt = jnp.dtype(cfg.param_dtype)
    h, kv = Attention(cfg, name="attn")(
        RMSNorm(cfg.norm_eps, pdt, name="input_norm")(x), positions, mask, kv, cache_index)
    x = x + h
    x = x + MLP(cfg, name="mlp")(RMSNorm(cfg.norm_eps, pdt, name="post_attn_norm")(x))
    return x, kv


class Transformer(nn.Module):
  """Policy/value transformer. See the module docstring for the two modes."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: Int[Array, "B T"],
               positions: Int[Array, "B T"] | None = None,
               token_mask: Bool[Array, "B T"] | None = None,
               cache: KVCache | None = None,
               cache_index: Int[Array, "B"] | int | None = None) -> TransformerOutput:
    """Runs the trunk and both heads.

    Args:
      tokens: ``[B, T]`` token ids.
      positions: ``[B, T]`` RoPE positions; defaults to ``0..T-1``.
      token_mask: ``[B, T]`` False for padding, which no query attends to.
        Defaults to all True.
      cache: optional KV cache with ``S >= cache_index + T`` slots.
      cache_index: ``[B]`` (or a scalar) slot where the first new token is
        written; required with ``cache``.

    Returns:
      ``TransformerOutput`` with float32 logits ``[B, T, V]``, values
      ``[B, T]`` and the updated cache (or None).
    """
    cfg = self.config
    b, t = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if token_mask is None:
      token_mask = jnp.ones((b, t), bool)

    if cache is None:
      causal = jnp.tril(jnp.ones((t, t), bool))
      mask = causal[None] & token_mask[:, None, :]                           # B T T
    else:
      if cache_index is None:
        raise ValueError("Transformer: cache_index is required with a cache")
      cache_index = jnp.broadcast_to(jnp.asarray(cache_index, jnp.int32), (b,))
      write = jax.vmap(lambda m, new, i: jax.lax.dynamic_update_slice(m, new, (i,)))
      slot_mask = write(cache.mask, token_mask, cache_index)                 # B S
      slots = jnp.arange(cache.length, dtype=jnp.int32)
      query_slot = cache_index[:, None] + jnp.arange(t, dtype=jnp.int32)[None]  # B T
      mask = slot_mask[:, None, :] & (slots[None, None, :] <= query_slot[:, :, None])

    embed = nn.Embed(cfg.vocab_size, cfg.embed_dim, dtype=jnp.dtype(cfg.dtype),
                     param_dtype=jnp.dtype(cfg.param_dtype),
                     embedding_init=nn.initializers.normal(stddev=cfg.embed_dim ** -0.5),
                     name="embed")
    x = embed(tokens)

    new_k, new_v = [], []
    block = nn.remat(Block) if cfg.remat else Block
    for layer in range(cfg.num_layers):
      kv = None if cache is None else (cache.k[layer], cache.v[layer])
      x, (k, v) = block(cfg, name=f"layer_{layer}")(x, positions, mask, kv, cache_index)
      new_k.append(k)
      new_v.append(v)
    x = RMSNorm(cfg.norm_eps, jnp.dtype(cfg.param_dtype), name="final_norm")(x)

    if cfg.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=jnp.dtype(cfg.dtype),
                        param_dtype=jnp.dtype(cfg.param_dtype), name="lm_head")(x)
    values = nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.dtype(cfg.param_dtype),
                      kernel_init=nn.initializers.zeros, name="value_head")(
                          x.astype(jnp.float32))[..., 0]

    new_cache = None
    if cache is not None:
      new_cache = KVCache(k=jnp.stack(new_k), v=jnp.stack(new_v), mask=slot_mask)
    return TransformerOutput(logits=logits.astype(jnp.float32), values=values,
                             cache=new_cache)


def init_params(config: TransformerConfig, rng: jax.Array) -> dict:
  """Fresh parameters for ``config`` (shapes only depend on the config)."""
  model = Transformer(config)
  tokens = jnp.zeros((1, 2), jnp.int32)
  return jax.jit(model.init)(rng, tokens)["params"]


def default_positions(token_mask: Bool[Array, "B T"]) -> Int[Array, "B T"]:
  """RoPE positions that skip left padding: the count of real tokens before."""
  return jnp.maximum(jnp.cumsum(token_mask.astype(jnp.int32), axis=1) - 1, 0)
