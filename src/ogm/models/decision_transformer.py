"""The Decision Transformer of ogm, in one file (nanoGPT style).

A trajectory is a sequence of steps; each step t becomes three tokens, in this order::

    ... s_t  R_t  a_t  s_{t+1} R_{t+1} a_{t+1} ...

with ``s`` the observation, ``R`` the return-to-go (reward still to come) and ``a`` the
action: the order of the Multi-Game Decision Transformer (Lee et al. 2022). Attention is
causal, so

- the **return head** reads the output at the ``s_t`` token. That token has seen
  ``s_<=t, R_<t, a_<t`` but not ``R_t`` itself, so it models ``P(R_t | history, s_t)``
  without a leak. At ``t = 0`` this is ``P(R | s_0)``, which the conditioning strategies in
  :mod:`ogm.agents.conditioning` sample targets from;
- the **action head** reads the output at the ``R_t`` token. It has seen ``s_t`` and
  ``R_t``: the same information the action head of the Online Decision Transformer has at
  its state token in the (R, s, a) order.

Each token type has its own embedding; an optional timestep embedding is added to all
three tokens of a step (``use_timesteps``; off in ODT, on in DT; the training code turns it
on where a time limit cuts the demonstrations, see ``ogm.train.offline.build_model``);
LayerNorm is applied to the stacked sequence; GPT blocks use causal attention, written out
(explicit scores and softmax were faster than ``F.scaled_dot_product_attention``'s CPU path
once padding needs a mask).

Precision: ``set_precision("bf16")`` runs the matmuls and the convolution under bfloat16
autocast, with float32 weights, attention softmax, heads' outputs and losses; on CPUs with
AVX512-BF16 this made a training update 1.8x faster at gridworld size with the same
learning curve (``docs/architecture.md``). Dropout draws its masks four elements per
random number on CPU (:func:`dropout`), which made an update another 1.2x faster.

The return token is where conditioning happens, and the linear embedding of DT and ODT,
``e(R) = w R + b``, fails there. Every token goes through LayerNorm,
``LN(x) = (x - mean(x)) / std(x)`` (then a gain and bias), which is blind to the scale of
``x``. With ``b = 0``, as nanoGPT initialises biases,

    LN(w R) = sign(R) * LN(w)        for every R != 0,

one token for every positive return: the model cannot tell 10 from 25 until training has
grown ``b`` to the size of ``w R``, and with unscaled returns (tens) that takes long.
Two changes fix it:

1. returns are scaled into [-1, 1]: ``r = reward_scale * R`` with ``reward_scale``
   defaulting to ``1 / max |return-to-go|`` of the data (``build_model``);
2. the return goes through a layer of hinges before the token::

       e(r) = W relu(u r + c),   u_i ~ N(0, 1),  c_i ~ U(-1, 1)

   Unit ``i`` bends at ``r = -c_i / u_i``; with these draws most bends lie in [-1, 1],
   where the scaled returns are. So ``e`` is piecewise linear with many pieces across the
   data's returns: not proportional to ``r`` (LayerNorm keeps ``|r|``), and returns one
   reward apart get distinct tokens from initialisation on (``tests/test_model.py``).
   ``u``, ``c`` and ``W`` are trained like every other weight.

Measured with the conditioning fidelity of :mod:`ogm.agents.fidelity` (slope of achieved
on asked-for return, greedy): on a deterministic room (``tests/test_fidelity.py``) scaling
alone is enough (mean error 0.6-0.8 with the linear token, 0.2-1.1 with hinges, against
5-8 unscaled); on tomato_watering with demonstrators of five skills, hinges gave a rank
correlation of 0.49 where the scaled linear token gave 0.06 and the old one 0.21 (one
seed each): finer differences between returns need the finer token.

Observations are normalised inside the model with frozen buffers (``obs_mean``,
``obs_std``), so a checkpoint carries its normaliser. The observation encoder is chosen
from the observation shape: a vector gets a linear layer; square image frames of at least
36x36 pixels (Atari's 4 stacked 84x84 frames) the Nature-DQN convolutions; grid planes
``(C, H, W)`` get one 3x3 convolution (16 channels: local features such as "agent next to a dry tomato") then a
linear layer over the whole grid. A second convolution cost three times as much per update
on gridworld sizes without doing better on the tomato_watering check; a plain
flatten-linear encoder did worse there.

Returns are discretised into ``n_bins`` uniform bins whose *centers* run from the lowest to
the highest return-to-go of the data (``return_bin_edges`` lie halfway between centers and
half a bin beyond each end). So the top return falls in the top bin (no off-by-one), returns
on the grid are represented exactly, and returns outside the range clamp to the end bins.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ogm.models.encoders import nature_cnn

PRECISIONS = ("fp32", "bf16")
MIN_FRAME = 36  # square observations this large are images: the smallest the Nature CNN takes
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # ODT's bounds on the Gaussian policy's log-std
ACTION_EPS = 1e-6  # target actions are clamped this far inside the bounds (ODT)


@dataclass
class DTConfig:
    """Everything needed to rebuild a :class:`DecisionTransformer` (stored in checkpoints)."""

    obs_shape: tuple[int, ...]
    act_dim: int  # number of actions (discrete) or action dimensions (continuous)
    discrete: bool
    return_bin_edges: tuple[float, ...]  # n_bins + 1 uniform edges, unscaled returns
    action_low: tuple[float, ...] | None = None  # bounds of continuous actions
    action_high: tuple[float, ...] | None = None
    reward_scale: float = 1.0  # returns-to-go are multiplied by this before embedding
    context_len: int = 20  # K: steps per sequence (3K tokens)
    max_ep_len: int = 1000  # size of the timestep embedding table
    use_timesteps: bool = False  # ODT default: no timestep embedding
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_inner: int | None = None  # MLP width; 4 * n_embd when None
    activation: str = "relu"  # "relu" (ODT) or "gelu"
    dropout: float = 0.1
    conv_channels: int = 16  # channels of the grid-plane encoder's convolution

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(d) for d in self.obs_shape)
        self.return_bin_edges = tuple(float(e) for e in self.return_bin_edges)
        if self.action_low is not None:
            self.action_low = tuple(float(v) for v in self.action_low)
        if self.action_high is not None:
            self.action_high = tuple(float(v) for v in self.action_high)
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(
                f"obs_shape must be a vector (D,) or grid planes (C, H, W), got {self.obs_shape}"
            )
        if self.act_dim < 1:
            raise ValueError(f"act_dim must be >= 1, got {self.act_dim}")
        if self.n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {self.n_layer}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")
        edges = np.asarray(self.return_bin_edges)
        if len(edges) < 2 or not np.all(np.diff(edges) > 0):
            raise ValueError("return_bin_edges must hold >= 2 strictly increasing values")
        if not np.allclose(np.diff(edges), edges[1] - edges[0], rtol=1e-6, atol=1e-9):
            raise ValueError("return_bin_edges must be uniform (see return_bin_edges_for)")
        if not self.discrete:
            if self.action_low is None or self.action_high is None:
                raise ValueError("continuous actions need action_low and action_high")
            if not (len(self.action_low) == len(self.action_high) == self.act_dim):
                raise ValueError(f"action_low/high must have act_dim={self.act_dim} entries")
            if not all(lo < hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
                raise ValueError("action_low must be below action_high in every dimension")

    @property
    def n_bins(self) -> int:
        return len(self.return_bin_edges) - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DTConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DTConfig fields: {sorted(unknown)}")
        return cls(**data)


def return_bin_edges_for(low: float, high: float, n_bins: int) -> tuple[float, ...]:
    """Uniform bin edges whose ``n_bins`` centers run from ``low`` to ``high`` inclusive.

    With integer returns and ``n_bins = high - low + 1`` every integer gets its own bin.
    A degenerate range (``high == low``) is widened to one unit so the bins stay valid.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    low, high = float(low), float(high)
    if high < low:
        raise ValueError(f"return range is empty: low={low} > high={high}")
    if high - low < 1e-8 or n_bins == 1:
        center, half = (low + high) / 2, max((high - low) / 2, 0.5)
        low, high = center - half, center + half
        if n_bins == 1:
            return (low, high)
    width = (high - low) / (n_bins - 1)
    return tuple(float(low - width / 2 + i * width) for i in range(n_bins + 1))


# ----------------------------------------------------------------------------- policies


class CategoricalPolicy:
    """Distribution over discrete actions; all methods act elementwise over batch dims."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits  # (..., n_actions)

    def __getitem__(self, index: Any) -> CategoricalPolicy:
        return CategoricalPolicy(self.logits[index])

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.logits, dim=-1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        logp = F.log_softmax(self.logits, dim=-1)
        return -(logp.exp() * logp).sum(-1)

    def probs(self) -> torch.Tensor:
        return F.softmax(self.logits, dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        flat = self.probs().reshape(-1, self.logits.shape[-1])
        draws = torch.multinomial(flat, 1, generator=generator)
        return draws.reshape(self.logits.shape[:-1])

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)


class TanhGaussianPolicy:
    """Diagonal Gaussian squashed by tanh into ``[low, high]`` (ODT's policy).

    ``log_prob`` is exact by change of variables; ``entropy`` is ODT's one-sample estimate
    ``-log_prob(a)`` with ``a`` drawn by reparameterisation (so it carries gradients).
    """

    def __init__(
        self, mean: torch.Tensor, log_std: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> None:
        self.mean, self.log_std = mean, log_std  # (..., A)
        self.low, self.high = low, high  # (A,)

    def __getitem__(self, index: Any) -> TanhGaussianPolicy:
        return TanhGaussianPolicy(self.mean[index], self.log_std[index], self.low, self.high)

    def _squash(self, u: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * (torch.tanh(u) + 1) / 2

    def _log_prob_u(self, u: torch.Tensor) -> torch.Tensor:
        """Log-density of the squashed action at pre-tanh value ``u``, summed over dims."""
        normal = -0.5 * ((u - self.mean) / self.log_std.exp()) ** 2 - self.log_std
        normal = normal - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2), written stably; plus the affine map's log-scale
        log_det = 2 * (math.log(2) - u - F.softplus(-2 * u)) + torch.log((self.high - self.low) / 2)
        return (normal - log_det).sum(-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        y = 2 * (actions - self.low) / (self.high - self.low) - 1
        y = y.clamp(-1 + ACTION_EPS, 1 - ACTION_EPS)
        return self._log_prob_u(torch.atanh(y))

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + self.log_std.exp() * noise

    def entropy(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return -self._log_prob_u(self.rsample(generator))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._squash(self.rsample(generator))

    def mode(self) -> torch.Tensor:
        return self._squash(self.mean)


Policy = CategoricalPolicy | TanhGaussianPolicy


@dataclass
class DTOutput:
    """What :meth:`DecisionTransformer.forward` returns, per step of the sequence."""

    policy: Policy  # action distribution at each step, batch shape (B, K)
    return_logits: torch.Tensor  # (B, K, n_bins): logits of P(R_t | s_<=t, R_<t, a_<t)


# ----------------------------------------------------------------------------- blocks


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (``F.dropout``); on CPU with a cheaper keep-mask.

    torch draws CPU dropout masks one random number per element, which cost more than the
    rest of a small DT's update together. Here each element compares a 16-bit uniform
    integer with ``p * 2**16`` (so ``p`` is exact to 1.5e-5), four per 64-bit draw of the
    default generator: the same distribution, so ``torch.manual_seed`` still fixes it.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    keep = words.view(torch.int16)[:n].view(x.shape) >= round(p * 2**16) - 2**15
    return x * keep * (1.0 / (1.0 - p))


class Dropout(nn.Module):
    """:func:`dropout` as a layer."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, written out: ``softmax(q k^T / sqrt(d)) v``.

    Under bfloat16 autocast the two matmuls run in bfloat16 and the masked softmax in
    float32 (it wants the range).
    """

    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.proj.residual = True  # scaled init (GPT-2)
        self.dropout = config.dropout
        self.resid_dropout = Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor, read: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``attn_mask``: True where a query (row) may attend to a key (column). ``read``:
        the positions whose outputs are wanted (default all); the others are not computed."""
        B, _, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        if read is not None:
            q, attn_mask = q[:, read], attn_mask[..., read, :]
        q, k, v = (t.view(B, -1, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
        weights = scores.float().masked_fill(~attn_mask, float("-inf")).softmax(dim=-1)
        y = dropout(weights, self.dropout, self.training) @ v  # (B, nh, T_read, hs)
        y = y.transpose(1, 2).reshape(B, -1, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm GPT block: attention then MLP, each with a residual connection."""

    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.fc = nn.Linear(config.n_embd, inner)
        self.act = nn.ReLU() if config.activation == "relu" else nn.GELU()
        self.proj = nn.Linear(inner, config.n_embd)
        self.proj.residual = True
        self.dropout = Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor, read: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The outputs at positions ``read`` (default all) of the sequence ``x``."""
        update = self.attn(self.ln_1(x), attn_mask, read)
        x = (x if read is None else x[:, read]) + update
        return x + self.dropout(self.proj(self.act(self.fc(self.ln_2(x)))))


def make_obs_encoder(config: DTConfig) -> nn.Module:
    """Linear for vectors; for grid planes (C, H, W) one 3x3 convolution, then linear; for
    square image frames of at least ``MIN_FRAME`` pixels (Atari's 84x84 stacks), the
    Nature-DQN convolutions (:func:`ogm.models.encoders.nature_cnn`)."""
    if len(config.obs_shape) == 1:
        return nn.Linear(config.obs_shape[0], config.n_embd)
    c, h, w = config.obs_shape
    if h == w >= MIN_FRAME:
        return nature_cnn(c, config.n_embd, frame=h)
    width = config.conv_channels
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * h * w, config.n_embd),
    )


class ReturnEncoder(nn.Module):
    """The return-to-go token: ``W relu(u r + c)`` with ``r = reward_scale * R`` (see the
    module docstring for why not ``w r`` as in DT and ODT)."""

    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        self.reward_scale = config.reward_scale
        self.hinge = nn.Linear(1, config.n_embd)  # u, c
        self.proj = nn.Linear(config.n_embd, config.n_embd)  # W

    def spread_hinges(self) -> None:
        """Bends at ``r = -c_i / u_i`` spread over [-1, 1], where the scaled returns lie."""
        nn.init.normal_(self.hinge.weight, mean=0.0, std=1.0)
        nn.init.uniform_(self.hinge.bias, -1.0, 1.0)

    def forward(self, returns_to_go: torch.Tensor) -> torch.Tensor:
        """(B, K, 1) unscaled returns-to-go -> (B, K, n_embd) tokens."""
        return self.proj(F.relu(self.hinge(returns_to_go.float() * self.reward_scale)))


# ----------------------------------------------------------------------------- model


class DecisionTransformer(nn.Module):
    """Decision Transformer with a policy head and a return-distribution head."""

    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.embed_obs = make_obs_encoder(config)
        self.embed_return = ReturnEncoder(config)
        if config.discrete:
            self.embed_action = nn.Embedding(config.act_dim, C)
        else:
            self.embed_action = nn.Linear(config.act_dim, C)
        self.embed_timestep = nn.Embedding(config.max_ep_len, C) if config.use_timesteps else None
        self.ln_in = nn.LayerNorm(C)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(C)
        self.action_head = nn.Linear(C, config.act_dim * (1 if config.discrete else 2))
        self.return_head = nn.Linear(C, config.n_bins)

        self.register_buffer("obs_mean", torch.zeros(config.obs_shape))
        self.register_buffer("obs_std", torch.ones(config.obs_shape))
        edges = torch.tensor(config.return_bin_edges, dtype=torch.float64)
        self.register_buffer("return_bin_centers", ((edges[:-1] + edges[1:]) / 2).float())
        if not config.discrete:
            self.register_buffer("action_low", torch.tensor(config.action_low))
            self.register_buffer("action_high", torch.tensor(config.action_high))
        T = 3 * config.context_len
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", causal, persistent=False)
        self.apply(self._init_weights)
        self.embed_return.spread_hinges()
        self.precision = "fp32"  # or "bf16": see set_precision

    def set_precision(self, precision: str) -> DecisionTransformer:
        """Compute in ``"fp32"`` or ``"bf16"`` (bfloat16 autocast: matmuls and convolutions
        in bfloat16, weights, attention scores, softmaxes, losses and the optimiser in
        float32). A run picks it from its config (``precision``); it is not part of the
        architecture, so checkpoints do not store it."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        return self

    @contextlib.contextmanager
    def precision_as(self, precision: str) -> Iterator[None]:
        """Compute in ``precision`` inside the block, in the run's own precision after."""
        own = self.precision
        self.set_precision(precision)
        try:
            yield
        finally:
            self.precision = own

    def _autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, torch.bfloat16, enabled=self.precision == "bf16")

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding | nn.Conv2d):
            std = 0.02
            if getattr(module, "residual", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def set_obs_normalizer(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Freeze the observation mean and std (computed from the offline data)."""
        self.obs_mean.copy_(torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.obs_std.copy_(torch.as_tensor(np.asarray(std, dtype=np.float32)))

    def return_bin_index(self, returns: torch.Tensor) -> torch.Tensor:
        """Bin of each (unscaled) return; values outside the range clamp to the end bins."""
        edges = self.config.return_bin_edges
        width = (edges[-1] - edges[0]) / self.config.n_bins
        index = torch.floor((returns.double() - edges[0]) / width).long()
        return index.clamp(0, self.config.n_bins - 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(
        self,
        returns_to_go: torch.Tensor,  # (B, K, 1) unscaled
        observations: torch.Tensor,  # (B, K, *obs_shape)
        actions: torch.Tensor,  # (B, K) long or (B, K, A) float
        timesteps: torch.Tensor,  # (B, K) long
    ) -> torch.Tensor:
        """The three input tokens of every step, (B, K, 3, C): ``s_t, R_t, a_t``.

        A step's tokens depend on that step alone, so an actor that keeps them can append
        one step at a time (:class:`ogm.agents.DTActor`) instead of re-encoding its window.
        """
        cfg = self.config
        B, K = observations.shape[:2]
        with self._autocast(observations.device):
            obs = (observations.float() - self.obs_mean) / self.obs_std
            s = self.embed_obs(obs.reshape(B * K, *cfg.obs_shape)).view(B, K, -1)
            r = self.embed_return(returns_to_go)
            t = self._timestep_tokens(timesteps)
            return torch.stack((s + t, r + t, self.embed_actions(actions, timesteps)), 2).float()

    def embed_actions(self, actions: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The action tokens alone, (B, K, C): what :meth:`embed` puts at ``a_t`` (an actor
        fills them in once the actions are chosen)."""
        cfg = self.config
        with self._autocast(actions.device):
            a = self.embed_action(actions.long() if cfg.discrete else actions.float())
            return (a + self._timestep_tokens(timesteps)).float()

    def _timestep_tokens(self, timesteps: torch.Tensor) -> torch.Tensor | float:
        if self.embed_timestep is None:
            return 0.0
        return self.embed_timestep(timesteps.clamp(0, self.config.max_ep_len - 1))

    def forward(
        self,
        returns_to_go: torch.Tensor,  # (B, K, 1) unscaled
        observations: torch.Tensor,  # (B, K, *obs_shape)
        actions: torch.Tensor,  # (B, K) long or (B, K, A) float
        timesteps: torch.Tensor,  # (B, K) long
        mask: torch.Tensor | None = None,  # (B, K) bool, False at (left) padding
        last_step_only: bool = False,  # see forward_tokens
    ) -> DTOutput:
        tokens = self.embed(returns_to_go, observations, actions, timesteps)
        return self.forward_tokens(tokens, mask, last_step_only)

    def forward_tokens(
        self, tokens: torch.Tensor, mask: torch.Tensor | None = None, last_step_only: bool = False
    ) -> DTOutput:
        """The transformer and the heads on tokens from :meth:`embed` (B, K, 3, C).

        ``last_step_only``: the outputs of the last step alone (batch shape (B, 1)), which is
        what acting needs; the last block then computes two rows instead of ``2K``.
        """
        cfg = self.config
        B, K = tokens.shape[:2]
        # causal, padded keys hidden; every token sees itself so padded rows are no NaN
        attn_mask = self.causal_mask[: 3 * K, : 3 * K]
        if attn_mask.shape[0] < 3 * K:  # an actor's context longer than training's
            attn_mask = torch.ones(3 * K, 3 * K, dtype=torch.bool, device=tokens.device).tril()
        if mask is not None and not bool(mask.all()):
            keys = mask.repeat_interleave(3, dim=1)  # (B, 3K)
            eye = torch.eye(3 * K, dtype=torch.bool, device=tokens.device)
            attn_mask = ((attn_mask & keys[:, None, :]) | eye)[:, None]  # (B, 1, 3K, 3K)
        with self._autocast(tokens.device):
            x = tokens.reshape(B, 3 * K, -1)  # s_0 R_0 a_0 s_1 ...
            x = self.drop(self.ln_in(x))
            for block in self.blocks[:-1]:
                x = block(x, attn_mask)
            # the heads read the s and R tokens only: the last block skips the a tokens
            read = torch.arange(3 * K, device=x.device).view(K, 3)[-1 if last_step_only else 0 :]
            read = read[:, :2].reshape(-1)
            x = self.ln_f(self.blocks[-1](x, attn_mask, read)).view(B, -1, 2, x.shape[-1])
            return_logits = self.return_head(x[:, :, 0]).float()  # at s_t: (B, K, n_bins)
            head = self.action_head(x[:, :, 1]).float()  # at R_t: (B, K, A) or (B, K, 2A)
        if cfg.discrete:
            policy: Policy = CategoricalPolicy(head)
        else:
            mean, raw_log_std = head.chunk(2, dim=-1)
            log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (
                torch.tanh(raw_log_std) + 1
            )
            policy = TanhGaussianPolicy(mean, log_std, self.action_low, self.action_high)
        return DTOutput(policy=policy, return_logits=return_logits)
