"""``TrellisAttention``: the Trellis token mixer (``docs/trellis.md``, "Layer")."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..checks import check_bool, check_choice, check_nonnegative_float, check_positive_float
from ..modules import ShortConvolution
from ..ops.driver import DEFAULT_CHUNK_SIZE
from ..ops.trellis import TrellisKnobs, chunk_trellis
from .recurrent import num_sequences
from .registry import register_mixer
from .slot_memory import SlotMemoryMixer, cache_entry, gate_logits, resume_state, unit_rows


@register_mixer("trellis")
class TrellisAttention(SlotMemoryMixer):
    """Token mixer: x [B, T, hidden] -> [B, T, hidden].

    Per head: ``q, k, v = SiLU(ShortConv(W x))`` (dims ``dk = dv = head_dim``; optional L2 norm of
    q, k), slot target code ``α = W_α x ∈ R^m`` (``learn_slot_codes=False`` keeps ``W_α`` at its random
    init; ``slot_code_source="conv"`` reads α from the short-convolved, SiLU'd q, k, v features instead of
    ``x``, so a token's code also depends on its neighbours: both ours, against the slot codes' collapse on
    the MQAR plateau, ``docs/ablations.md``); in training, ``slot_code_decorrelation`` (default 10, ours; 0 = off)
    times the mean squared cosine between the slot codes of a sequence's tokens (``slot_code_overlap``) is set
    as ``aux_loss``, which the causal-LM loss and the trainer's objectives add: it keeps the codes from
    collapsing to one direction, the failure of every Trellis run that stayed on the MQAR plateau
    (``docs/ablations.md``, ninth session); forget gate
    ``log β = logsigmoid(W_β x + b)`` with ``b`` drawn so β starts in ``beta_init`` (``forget_gate=False``:
    β = 1, the paper's "no forget gate" ablation), inner step γ by ``gamma_mode``:
    - ``sigmoid`` (default): ``γ = gamma_max · sigmoid(W_γ x + b)``, starting at ``min(1/head_dim,
      gamma_max/2)``; the bound (default 0.05, ours) keeps high learning rates from growing γ into the
      regime where the first writes drown the rest (``docs/ablations.md``);
    - ``softplus``: unbounded, starting at ``1/head_dim`` (1 with ``qk_l2norm``);
    - ``key_normalized``: ``γ = gamma_max · sigmoid(...) / (‖k‖² + 0.01)``, a normalised-LMS step that
      moves the written key's response by the same amount whatever the key's norm.
    Gates are computed in float32 even under autocast. Initial memories ``M_0`` learnable with rows of
    norm ``initial_state_scale`` (``learn_initial_state``; scale 1: unit rows) or zeros (default: a learned
    ``M_0`` leaves the MQAR plateau sooner but made byte-LM perplexity rise beyond the training length,
    ``docs/ablations.md``);
    ``forget_to_initial_state`` (``none``/``key``/``value``/``both``; needs a learned ``M_0``): in the named
    memories the forget gate pulls back toward ``M_0`` instead of toward 0, ``M_t = β M_{t-1} + (1-β) M_0 -
    γ u wᵀ``, so ``M_0`` stays in the memory however long the context (ours; measured in
    ``docs/ablations.md``); the two-pass Trellis op over ``m`` slots; per-head RMSNorm; output gate ``GELU(W_g x)``; output projection.
    State per head ``m·(dk+dv)`` floats. Op knobs (phi, f, psi, value_objective, outer_grad, eps,
    read_eps, chunk_mode) become one ``TrellisKnobs``, checked here and passed to ``chunk_trellis``.
    """

    knobs_class = TrellisKnobs

    def __init__(self, hidden_size: int, num_heads: int, num_slots: int | None = 64, head_dim: int | None = None, *,
                 conv_size: int = 4, chunk_size: int = DEFAULT_CHUNK_SIZE, learn_initial_state: bool = False,
                 norm_eps: float = 1e-5, layer_idx: int | None = None,
                 qk_l2norm: bool = False, forget_gate: bool = True, beta_init: tuple[float, float] = (0.9, 0.99),
                 gamma_mode: str = "sigmoid", gamma_max: float = 0.05, forget_to_initial_state: str = "none",
                 initial_state_scale: float = 1.0, learn_slot_codes: bool = True, slot_code_source: str = "input",
                 slot_code_decorrelation: float = 10.0, **knobs):
        super().__init__()
        self._init_slot_memory(hidden_size, num_heads, num_slots, head_dim, conv_size, chunk_size, layer_idx, knobs)
        check_choice("gamma_mode", gamma_mode, GAMMA_MODES)
        check_positive_float("gamma_max", gamma_max)
        lo, hi = _check_beta_init(beta_init)
        check_bool("forget_gate", forget_gate)
        check_choice("forget_to_initial_state", forget_to_initial_state, FORGET_TO_INITIAL_STATE)
        check_bool("learn_initial_state", learn_initial_state)
        check_bool("learn_slot_codes", learn_slot_codes)
        check_choice("slot_code_source", slot_code_source, SLOT_CODE_SOURCES)
        self.slot_code_source = slot_code_source
        check_nonnegative_float("slot_code_decorrelation", slot_code_decorrelation)
        self.slot_code_decorrelation = float(slot_code_decorrelation)
        check_positive_float("initial_state_scale", initial_state_scale)
        for name, value, unset in (("forget_to_initial_state", forget_to_initial_state, "none"),
                                   ("initial_state_scale", initial_state_scale, 1.0)):  # knobs of a learned M_0
            if value != unset and not learn_initial_state:
                raise ValueError(f"{name}={value!r} needs learn_initial_state=True (with M_0 = 0 it changes nothing)")
        self.forget_to_initial_state = forget_to_initial_state
        self.qk_l2norm, self.gamma_mode, self.gamma_max = bool(qk_l2norm), gamma_mode, float(gamma_max)
        H, m, d = num_heads, self.num_slots, self.head_dim
        self.qkv_proj = nn.Linear(hidden_size, 3 * H * d, bias=False)
        self.conv = ShortConvolution(3 * H * d, conv_size, activation="silu")
        code_in = hidden_size if slot_code_source == "input" else 3 * H * d
        self.alpha_proj = nn.Linear(code_in, H * m, bias=False).requires_grad_(learn_slot_codes)
        self.beta_proj = nn.Linear(hidden_size, H, bias=True) if forget_gate else None  # None: beta = 1
        self.gamma_proj = nn.Linear(hidden_size, H, bias=True)
        self.g_proj = nn.Linear(hidden_size, H * d, bias=False)
        self.o_norm = nn.RMSNorm(d, eps=norm_eps)
        self.o_proj = nn.Linear(H * d, hidden_size, bias=False)
        with torch.no_grad():
            if forget_gate:
                beta0 = torch.empty(H).uniform_(lo, hi)
                self.beta_proj.bias.copy_(torch.log(beta0 / (1 - beta0)))
            # softplus / sigmoid: gamma starts at 1/head_dim (1 with qk_l2norm), capped at half of gamma_max
            # for sigmoid. (At the default init E||k||^2 is ~0.03 head_dim, not head_dim, so gamma ||k||^2
            # starts near 0.03: docs/ablations.md.) key_normalized: gamma ||k||^2 starts at gamma_max / 2.
            per_key = 1.0 if self.qk_l2norm else 1.0 / d
            gamma0 = {"softplus": per_key, "sigmoid": min(per_key, 0.5 * self.gamma_max),
                      "key_normalized": 0.5 * self.gamma_max}[gamma_mode]
            bias = math.log(math.expm1(gamma0)) if gamma_mode == "softplus" else math.log(gamma0 / (self.gamma_max - gamma0))
            self.gamma_proj.bias.fill_(bias)
        if learn_initial_state:  # learnable M_0, rows of norm initial_state_scale: the first writes see z = M_0 w != 0
            self.initial_key_state, self.initial_value_state = (nn.Parameter(initial_state_scale * unit_rows(H, m, d))
                                                                for _ in range(2))
        else:  # M_0 = 0
            self.register_buffer("initial_key_state", torch.zeros(H, m, d))
            self.register_buffer("initial_value_state", torch.zeros(H, m, d))

    def state_size(self, seq_len: int = 0) -> int:
        """Recurrent state floats per sequence: ``H·m·(dk+dv)`` (conv cache excluded)."""
        return self.num_heads * self.num_slots * 2 * self.head_dim

    def _mix(self, x, state, cu_seqlens, use_cache):
        H = self.num_heads
        y, conv_state = self.conv(self.qkv_proj(x), cache=None if state is None else state["conv_state"],
                                  output_final_state=use_cache, cu_seqlens=cu_seqlens)
        q, k, v = (rearrange(t, "b t (h d) -> b t h d", h=H) for t in y.chunk(3, dim=-1))
        if self.qk_l2norm:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        alpha = rearrange(self.alpha_proj(x if self.slot_code_source == "input" else y), "b t (h m) -> b t h m", h=H)
        self.aux_loss = (self.slot_code_decorrelation * slot_code_overlap(alpha, cu_seqlens)
                         if self.training and self.slot_code_decorrelation > 0 else None)
        # gates in float32 (autocast off); log beta = logsigmoid(.), floored at float32's smallest normal
        # number so that log beta stays finite (beta = 1e-38 and beta = 0 both forget everything)
        if self.beta_proj is None:  # no forget gate (the paper's ablation row): plain online GD, beta = 1
            beta = x.new_ones(*x.shape[:2], H, dtype=torch.float32)
        else:
            beta = F.logsigmoid(gate_logits(self.beta_proj, x)).exp().clamp_min(torch.finfo(torch.float32).tiny)
        g = gate_logits(self.gamma_proj, x)
        gamma = F.softplus(g) if self.gamma_mode == "softplus" else self.gamma_max * torch.sigmoid(g)
        if self.gamma_mode == "key_normalized":  # gamma / (||k||^2 + 0.01) in float32; the 0.01 (as in
            # normalised LMS) keeps a near-zero key from making a large state change
            gamma = gamma / (k.float().pow(2).sum(-1) + 1e-2)
        n = num_sequences(x, cu_seqlens)
        fresh = tuple(p.float().expand(n, *p.shape) for p in (self.initial_key_state, self.initial_value_state))
        rest = self._rest_state()
        o, final = chunk_trellis(q, k, v, alpha, beta, gamma, initial_state=resume_state(state, fresh, use_cache),
                                 output_final_state=use_cache, chunk_size=self.chunk_size, cu_seqlens=cu_seqlens,
                                 knobs=self.knobs, rest_state=rest)
        o = self.o_norm(o.to(x.dtype)) * F.gelu(rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=H))
        o = self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
        return o, cache_entry(final, conv_state)

    def _rest_state(self):
        """The states the forget gate pulls toward: ``(M̄k [H, m, dk], M̄v [H, m, dv])``, or None (both 0)."""
        if self.forget_to_initial_state == "none":
            return None
        pull_k, pull_v = self.forget_to_initial_state in ("key", "both"), self.forget_to_initial_state in ("value", "both")
        Mk, Mv = self.initial_key_state.float(), self.initial_value_state.float()
        return (Mk if pull_k else torch.zeros_like(Mk), Mv if pull_v else torch.zeros_like(Mv))


GAMMA_MODES = ("softplus", "sigmoid", "key_normalized")
SLOT_CODE_SOURCES = ("input", "conv")
FORGET_TO_INITIAL_STATE = ("none", "key", "value", "both")


def _check_beta_init(beta_init):
    if (not isinstance(beta_init, (tuple, list)) or len(beta_init) != 2
            or not all(isinstance(b, float) and 0.0 < b < 1.0 for b in beta_init) or beta_init[0] > beta_init[1]):
        raise ValueError(f"beta_init must be (low, high) with 0 < low <= high < 1, got {beta_init!r}")
    return beta_init


def slot_code_overlap(alpha: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared cosine between the slot codes of different tokens of a sequence: alpha [B, T, H, m]
    (packed: B = 1 with ``cu_seqlens``) -> a scalar, averaged over sequences and heads.

    Codes are centred over the slots first (``ln_silu`` targets cannot reach a code's mean). About 1/(m − 1)
    for random codes, 1 when every token has the same code — the collapse of the MQAR plateau
    (``docs/ablations.md``). The Gram matrix over the slot axis gives the sum over all token pairs,
    ``‖Σ_t c_t c_tᵀ‖²_F = Σ_{t,s} (c_t·c_s)²``, at O(T m²) cost instead of O(T² m)."""
    c = alpha.to(torch.promote_types(alpha.dtype, torch.float32))
    c = F.normalize(c - c.mean(-1, keepdim=True), dim=-1)
    bounds = [0, c.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
    terms = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        seq, T = c[:, a:b], b - a
        if T < 2:
            continue
        gram = torch.einsum("bthm,bthn->bhmn", seq, seq)
        self_pairs = seq.square().sum(-1).square().sum(1)  # the t = s terms: 1 per token (0 for a constant code)
        terms.append(((gram.square().sum((-1, -2)) - self_pairs) / (T * (T - 1))).reshape(-1))
    return torch.cat(terms).mean() if terms else c.new_zeros(())
