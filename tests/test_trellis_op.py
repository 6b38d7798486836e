"""Trellis op: naive loop (float64) -> chunk form, against independent oracles."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from slotmem.ops.trellis import TrellisKnobs, chunk_trellis, naive_trellis, recurrent_trellis, write_grad
from slotmem.ops.trellis.knobs import CHUNK_MODES, FS, OUTER_GRADS, PHIS, PSIS, VALUE_OBJECTIVES, activation
from slotmem.ops.utils import NonFiniteInputError

F64 = torch.float64
EPS = 1e-5  # a small floor, where the normalised maps are (almost) exactly normalised
READ_EPS = 0.3  # a read-map eps unlike EPS, to tell which eps each map takes
ALL_KNOBS = [dict(zip(("phi", "f", "psi", "value_objective", "outer_grad"), c))
             for c in itertools.product(PHIS, FS, PSIS, VALUE_OBJECTIVES, OUTER_GRADS)]
ARGS = ("q", "k", "v", "alpha", "beta", "gamma")


def make(B=2, T=7, H=2, dk=5, dv=3, m=4, dtype=F64, seed=0, state=True, beta_range=(0.5, 0.99), gamma_max=0.6):
    """Random inputs (requiring grad) and, with ``state``, a random initial state."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    lo, hi = beta_range
    x = dict(q=r(B, T, H, dk), k=r(B, T, H, dk) / math.sqrt(dk), v=r(B, T, H, dv) / math.sqrt(dv),
             alpha=r(B, T, H, m), beta=lo + (hi - lo) * torch.rand(B, T, H, generator=g, dtype=dtype),
             gamma=gamma_max * torch.rand(B, T, H, generator=g, dtype=dtype))
    s = (r(B, H, m, dk), r(B, H, m, dv)) if state else None
    for t in list(x.values()) + list(s or ()):
        t.requires_grad_()
    return x, s


def leaves(x, s):
    return [x[n] for n in ARGS] + list(s or ())


def run_with_grads(fn, x, s, seed=1, **kw):
    """Forward with final state, then grads of <o, co> + <Mk, cMk> + <Mv, cMv> w.r.t. every input."""
    o, (Mk, Mv) = fn(*(x[n] for n in ARGS), initial_state=s, output_final_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (o, Mk, Mv))
    grads = torch.autograd.grad(loss, leaves(x, s), allow_unused=True)
    return [o, Mk, Mv] + [torch.zeros_like(p) if d is None else d for p, d in zip(leaves(x, s), grads)]


def max_err(a, b):
    """Max abs error over tensors, each scaled by max(1, max|ref|) (gradients reach ~1e4 at T=100)."""
    return max((x - y).abs().max().item() / max(1.0, y.abs().max().item()) for x, y in zip(a, b))


# --- closed-form VJPs -------------------------------------------------------------------------

PHI_FNS = {  # independent forward definitions of phi (torch's own layer_norm); normalise AFTER SiLU
    "identity": lambda x: x,
    "silu": F.silu,
    "ln_silu": lambda x, eps=EPS: F.layer_norm(F.silu(x), x.shape[-1:], eps=eps),
    "l2_silu": lambda x, eps=EPS: F.silu(x) * torch.rsqrt(F.silu(x).pow(2).sum(-1, keepdim=True) + eps),
}


@pytest.mark.parametrize("name", ["silu", "ln_silu", "l2_silu"])
def test_maps_normalise_after_silu(name):
    """The spec's definitions: ``ln_silu = LN(SiLU(z))``, ``l2_silu = SiLU(z)/sqrt(‖SiLU(z)‖² + eps)``
    (at a small eps and at the knob's default); with a small eps the normalised maps have zero mean /
    unit variance or unit norm whatever SiLU's output."""
    z = torch.randn(4, 9, dtype=F64) * 3
    if name != "silu":
        default = TrellisKnobs().eps
        torch.testing.assert_close(activation(z, name, default), PHI_FNS[name](z, default), rtol=0, atol=1e-13)
    y = activation(z, name, EPS)
    torch.testing.assert_close(y, PHI_FNS[name](z), rtol=0, atol=1e-13)
    if name == "ln_silu":
        torch.testing.assert_close(y.mean(-1), torch.zeros(4, dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, dtype=F64), rtol=0, atol=1e-3)  # var/(var+eps)
    if name == "l2_silu":
        torch.testing.assert_close(y.norm(dim=-1), torch.ones(4, dtype=F64), rtol=0, atol=1e-5)
        assert (y > -0.3).all()  # a normalised SiLU output, not the SiLU of a normalised input


@pytest.mark.parametrize("phi", PHIS)
def test_write_grad_is_the_loss_gradient_to_second_order(phi):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 6, generator=g, dtype=F64, requires_grad=True)
    a = torch.randn(3, 6, generator=g, dtype=F64, requires_grad=True)
    ref = torch.autograd.grad(0.5 * (PHI_FNS[phi](z) - a).pow(2).sum(), z, create_graph=True)[0]
    u = write_grad(z, a, phi, EPS)
    torch.testing.assert_close(u, ref, rtol=0, atol=1e-12)
    c = torch.randn(3, 6, generator=g, dtype=F64)  # second order: d<u, c>/d(z, alpha)
    d_ref = torch.autograd.grad((ref * c).sum(), (z, a))
    d_u = torch.autograd.grad((u * c).sum(), (z, a))
    for x, y in zip(d_u, d_ref):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-11)


# --- chunk form == naive loop --------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size,chunk_mode", [(1, "stale"), (1, "delta"), (3, "stale"), (3, "delta")])
def test_chunk_matches_naive_all_knobs(chunk_size, chunk_mode):
    """C=1: the exact recurrence (also via recurrent_trellis; the delta correction vanishes). C=3, T=7:
    the token-by-token simulation of the chunk approximation (stale gradients, or stale + delta correction)."""
    x, s = make(B=1, T=7, H=1, dk=3, dv=2, m=3)
    fast = recurrent_trellis if chunk_size == 1 else chunk_trellis
    extra = {} if chunk_size == 1 else dict(chunk_size=chunk_size)
    for kn in ALL_KNOBS:
        ref = run_with_grads(naive_trellis, x, s, chunk_size=chunk_size, chunk_mode=chunk_mode, **kn)
        got = run_with_grads(fast, x, s, **extra, chunk_mode=chunk_mode, **kn)
        assert max_err(got, ref) <= 1e-10, kn


@pytest.mark.parametrize("outer_grad", OUTER_GRADS)
@pytest.mark.parametrize("value_objective", VALUE_OBJECTIVES)
def test_delta_chunk_is_exact_where_the_write_is_linear(outer_grad, value_objective):
    """phi = identity (both passes gated delta rules in slot space; decode: the value pass is one for
    any phi): the delta-corrected chunk form IS the exact recurrence at any chunk size, forward and
    backward, with a rest state too; the stale form is not."""
    x, s = make(T=11, gamma_max=0.9)
    kn = dict(phi="identity", f="ln_silu", psi="l2_silu", value_objective=value_objective, outer_grad=outer_grad)
    exact = run_with_grads(naive_trellis, x, s, chunk_size=1, **kn)
    for C in (4, 11):
        assert max_err(run_with_grads(chunk_trellis, x, s, chunk_size=C, chunk_mode="delta", **kn), exact) <= 1e-12
    assert max_err(run_with_grads(chunk_trellis, x, s, chunk_size=4, **kn), exact) > 1e-3
    rest = make_rest()
    exact = grads_with_rest(naive_trellis, x, s, rest, rest_state=rest, chunk_size=1, **kn)
    got = grads_with_rest(chunk_trellis, x, s, rest, rest_state=rest, chunk_size=4, chunk_mode="delta", **kn)
    assert max_err(got, exact) <= 1e-12


@pytest.mark.parametrize("T", [1, 63, 100])
def test_odd_lengths_and_dims(T):
    x, s = make(B=1, T=T, H=2, dk=5, dv=7, m=6, seed=T)
    for kn in (dict(), dict(phi="l2_silu", f="softmax", psi="ln_silu", value_objective="decode"), dict(chunk_mode="delta")):
        ref = run_with_grads(naive_trellis, x, s, chunk_size=16, **kn)
        got = run_with_grads(chunk_trellis, x, s, chunk_size=16, **kn)
        assert max_err(got, ref) <= 1e-10, kn


# --- independent oracles -------------------------------------------------------------------------

def gated_delta_loop(x, s, f, psi, value_objective):
    """phi=identity: both passes are gated delta rules in slot space, written from scratch."""
    Mk, Mv = s
    act = {"identity": lambda y: y, "none": lambda y: y, "softmax": lambda y: y.softmax(-1),
           "ln_silu": PHI_FNS["ln_silu"], "l2_silu": PHI_FNS["l2_silu"]}
    outs = []
    for t in range(x["q"].shape[1]):
        q, k, v, a = (x[n][:, t] for n in ("q", "k", "v", "alpha"))
        b, g = (x[n][:, t, :, None, None] for n in ("beta", "gamma"))
        # delta rule: state += lr * (target - prediction) ⊗ key, after the forget gate
        Mk = b * Mk + g * (a - torch.einsum("bhmd,bhd->bhm", Mk, k))[..., None] * k[:, :, None]
        r = act[f](torch.einsum("bhmd,bhd->bhm", Mk, q))
        if value_objective == "encode":
            Mv = b * Mv + g * (a - torch.einsum("bhmd,bhd->bhm", Mv, v))[..., None] * v[:, :, None]
        else:  # key alpha, target v
            Mv = b * Mv + g * a[..., None] * (v - torch.einsum("bhmd,bhm->bhd", Mv, a))[:, :, None]
        outs.append(act[psi](torch.einsum("bhmd,bhm->bhd", Mv, r)))
    return torch.stack(outs, 1), (Mk, Mv)


def test_identity_phi_is_a_gated_delta_rule():
    x, s = make(T=9)
    for f, psi, vo in itertools.product(FS, PSIS, VALUE_OBJECTIVES):
        ref = run_with_grads(lambda *a, **kw: gated_delta_loop(dict(zip(ARGS, a)), kw["initial_state"], f, psi, vo),
                             x, s)
        got = run_with_grads(chunk_trellis, x, s, chunk_size=1, phi="identity", f=f, psi=psi, value_objective=vo,
                             outer_grad="full", eps=0.3, read_eps=EPS)  # the oracle differentiates through
        # every write; f and psi take read_eps (phi = identity leaves eps unused)
        assert max_err(got, ref) <= 1e-10, (f, psi, vo)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_identity_key_pass_matches_fla_gated_delta_rule():
    """Cross-check pass 1 against fla's reference loop (float32): hᵀ = Mk with
    g = log beta, fla beta = gamma / beta, fla v = beta * alpha, scale 1."""
    naive = pytest.importorskip("fla.ops.gated_delta_rule.naive").naive_recurrent_gated_delta_rule
    x, s = make(T=20, dtype=torch.float32)
    x = {n: t.detach() for n, t in x.items()}
    Mk0 = s[0].detach()
    _, (Mk, _) = chunk_trellis(*(x[n] for n in ARGS), initial_state=(Mk0, s[1].detach()), output_final_state=True,
                               chunk_size=1, phi="identity")
    b = x["beta"]
    _, h = naive(x["q"], x["k"], b[..., None] * x["alpha"], x["gamma"] / b, b.log(), scale=1.0,
                 initial_state=Mk0.transpose(-1, -2), output_final_state=True)
    torch.testing.assert_close(Mk, h.transpose(-1, -2), rtol=1e-5, atol=1e-5)


def autograd_gd_loop(x, s, phi, value_objective, detach, chunk_size=1, rest=None):
    """Trellis with each write ``M <- beta M - gamma dL/dM`` taken by autograd on the loss itself
    (at the chunk-start state, detached for first_order); f = ln_silu, psi = none. ``rest``:
    ``(R̄k, R̄v)`` toward which the forget gate pulls, ``M <- beta M + (1 - beta) R̄ - gamma dL/dM``."""
    Mk, Mv = s
    Rk, Rv = (0.0, 0.0) if rest is None else rest
    outs = []
    for t in range(x["q"].shape[1]):
        q, k, v, a = (x[n][:, t] for n in ("q", "k", "v", "alpha"))
        b, g = (x[n][:, t, :, None, None] for n in ("beta", "gamma"))
        if t % chunk_size == 0:
            Ak, Av = (Mk.detach().requires_grad_(), Mv.detach().requires_grad_()) if detach else (Mk, Mv)

        def step(M, anchor, loss, R):
            return b * M + (1 - b) * R - g * torch.autograd.grad(loss(anchor), anchor, create_graph=True)[0]

        def encode(w):
            return lambda M: 0.5 * (PHI_FNS[phi](torch.einsum("bhmd,bhd->bhm", M, w)) - a).pow(2).sum()

        def decode(M):
            return 0.5 * (torch.einsum("bhmd,bhm->bhd", M, a) - v).pow(2).sum()

        Mk = step(Mk, Ak, encode(k), Rk)
        r = PHI_FNS["ln_silu"](torch.einsum("bhmd,bhd->bhm", Mk, q), eps=READ_EPS)
        Mv = step(Mv, Av, encode(v) if value_objective == "encode" else decode, Rv)
        outs.append(torch.einsum("bhmd,bhm->bhd", Mv, r))
    return torch.stack(outs, 1), (Mk, Mv)


@pytest.mark.parametrize("outer_grad", OUTER_GRADS)
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_outer_grad_matches_autograd_gd_oracle(outer_grad, chunk_size):
    x, s = make(T=7)
    for phi, vo in itertools.product(PHIS, VALUE_OBJECTIVES):
        oracle = lambda *a, **kw: autograd_gd_loop(dict(zip(ARGS, a)), kw["initial_state"], phi, vo,  # noqa: E731
                                                   outer_grad == "first_order", chunk_size)
        ref = run_with_grads(oracle, x, s)
        got = run_with_grads(chunk_trellis, x, s, chunk_size=chunk_size, phi=phi, value_objective=vo,
                             outer_grad=outer_grad, f="ln_silu", psi="none", eps=EPS,
                             read_eps=READ_EPS)  # the write's phi takes eps, the read's f read_eps
        assert max_err(got, ref) <= 1e-10, (phi, vo)


def state_only_grads(x, s, **kw):
    """Gradients of <cMk, Mk_T> + <cMv, Mv_T> w.r.t. (Mk0, Mv0); returns them and the cotangents."""
    _, (Mk, Mv) = chunk_trellis(*(x[n] for n in ARGS), initial_state=s, output_final_state=True, **kw)
    cs = [torch.randn_like(Mk), torch.randn_like(Mv)]
    return torch.autograd.grad((Mk * cs[0]).sum() + (Mv * cs[1]).sum(), s), cs


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("value_objective", VALUE_OBJECTIVES)
def test_full_versus_first_order(phi, value_objective):
    """Same forward. first_order: u ignores the state, so dM_T/dM_0 = prod(beta) I exactly. On a
    single chunk the anchor is the initial state (a function of no other input), so the input
    gradients agree and only the state gradients differ; across chunks the input gradients differ."""
    x, s = make(T=7)
    decay = x["beta"].detach().prod(1)[..., None, None]  # [B, H, 1, 1]
    for chunk_size in (1, 3, 7):
        kw = dict(chunk_size=chunk_size, phi=phi, value_objective=value_objective)
        full = run_with_grads(chunk_trellis, x, s, **kw, outer_grad="full")
        fo = run_with_grads(chunk_trellis, x, s, **kw, outer_grad="first_order")
        assert max_err(fo[:3], full[:3]) <= 1e-12  # o, Mk, Mv
        input_diff = max_err(fo[3:9], full[3:9])
        assert input_diff <= 1e-12 if chunk_size == 7 else input_diff > 1e-3
        assert max_err(fo[9:], full[9:]) > 1e-3
        torch.manual_seed(0)
        g_fo, cs = state_only_grads(x, s, **kw, outer_grad="first_order")
        for gr, c in zip(g_fo, cs):
            torch.testing.assert_close(gr, decay * c, rtol=0, atol=1e-12)
        torch.manual_seed(0)
        g_full, _ = state_only_grads(x, s, **kw, outer_grad="full")
        assert min((a - b).abs().max() for a, b in zip(g_full, g_fo)) > 1e-3


# --- rest state: the forget gate pulls toward M̄ instead of 0 -----------------------------------------

def make_rest(H=2, dk=5, dv=3, m=4, seed=5):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(H, m, d, generator=g, dtype=F64).requires_grad_() for d in (dk, dv))


def grads_with_rest(fn, x, s, rest, seed=1, **kw):
    """``run_with_grads`` plus the gradients w.r.t. the rest state."""
    o, (Mk, Mv) = fn(*(x[n] for n in ARGS), initial_state=s, output_final_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (o, Mk, Mv))
    return [o, Mk, Mv, *torch.autograd.grad(loss, leaves(x, s) + list(rest))]


@pytest.mark.parametrize("outer_grad", OUTER_GRADS)
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_rest_state_matches_autograd_gd_oracle(outer_grad, chunk_size):
    """Forward and every gradient (the rest state's too) against the from-scratch loop, and the
    reference loop against the chunk form."""
    x, s = make(T=7)
    rest = make_rest()
    for phi, vo in itertools.product(PHIS, VALUE_OBJECTIVES):
        oracle = lambda *a, **kw: autograd_gd_loop(dict(zip(ARGS, a)), kw["initial_state"], phi, vo,  # noqa: E731
                                                   outer_grad == "first_order", chunk_size, rest=rest)
        kn = dict(phi=phi, value_objective=vo, outer_grad=outer_grad, f="ln_silu", psi="none", eps=EPS,
                  read_eps=READ_EPS)
        ref = grads_with_rest(oracle, x, s, rest)
        got = grads_with_rest(chunk_trellis, x, s, rest, chunk_size=chunk_size, rest_state=rest, **kn)
        assert max_err(got, ref) <= 1e-10, (phi, vo)
        loop = grads_with_rest(naive_trellis, x, s, rest, chunk_size=chunk_size, rest_state=rest, **kn)
        assert max_err(loop, ref) <= 1e-10, (phi, vo)


def test_rest_state_pull_chaining_and_zero():
    """gamma = 0: the memory relaxes to M̄ exactly, M_T = P M_0 + (1 - P) M̄; a zero rest state is no
    rest state; split calls chain (the rest state is passed to each)."""
    x, s = make(T=11)
    rest = make_rest()
    with torch.no_grad():
        x0 = dict(x, gamma=torch.zeros_like(x["gamma"]))
        _, (Mk, Mv) = chunk_trellis(*(x0[n] for n in ARGS), initial_state=s, output_final_state=True, chunk_size=4,
                                    rest_state=rest)
        P = x["beta"].prod(1)[..., None, None]
        for M, M0, R in ((Mk, s[0], rest[0]), (Mv, s[1], rest[1])):
            torch.testing.assert_close(M, P * M0 + (1 - P) * R, rtol=0, atol=1e-12)
        zero = tuple(torch.zeros_like(r) for r in rest)
        a, b = (chunk_trellis(*(x[n] for n in ARGS), initial_state=s, chunk_size=4, rest_state=r)[0] for r in (zero, None))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    kn = dict(chunk_size=4, phi="l2_silu", rest_state=rest)
    full = grads_with_rest(chunk_trellis, x, s, rest, **kn)

    def chained(*a, initial_state, output_final_state, **kw):
        o1, h = chunk_trellis(*(t[:, :8] for t in a), initial_state=initial_state, output_final_state=True, **kw)
        o2, h = chunk_trellis(*(t[:, 8:] for t in a), initial_state=h, output_final_state=True, **kw)
        return torch.cat([o1, o2], 1), h

    assert max_err(grads_with_rest(chained, x, s, rest, **kn), full) <= 1e-12


def test_rest_state_bad_shapes():
    x, s = make(B=2, T=4, H=2, dk=5, dv=3, m=4)
    a = [x[n] for n in ARGS]
    Rk, Rv = make_rest()
    with pytest.raises(TypeError, match="rest_state must be a tuple"):
        chunk_trellis(*a, rest_state=Rk)
    with pytest.raises(ValueError, match=r"rest_state Mk must be \[H=2, m=4, dk=5\]"):
        chunk_trellis(*a, rest_state=(Rk[:1], Rv))
    with pytest.raises(ValueError, match="rest_state Mv must have 3 dims"):
        naive_trellis(*a, rest_state=(Rk, Rv[None]))


# --- chaining, varlen, gradcheck, long sequences ---------------------------------------------------

@pytest.mark.parametrize("chunk_mode", CHUNK_MODES)
@pytest.mark.parametrize("chunk_size,T1", [(1, 3), (1, 6), (4, 4), (4, 8)])
def test_chaining(chunk_size, T1, chunk_mode):
    x, s = make(T=11)
    kn = dict(chunk_size=chunk_size, phi="l2_silu", value_objective="decode", chunk_mode=chunk_mode)
    full = run_with_grads(chunk_trellis, x, s, **kn)

    def chained(*a, initial_state, output_final_state, **kw):
        o1, h = chunk_trellis(*(t[:, :T1] for t in a), initial_state=initial_state, output_final_state=True, **kw)
        o2, h = chunk_trellis(*(t[:, T1:] for t in a), initial_state=h, output_final_state=True, **kw)
        return torch.cat([o1, o2], 1), h

    assert max_err(run_with_grads(chained, x, s, **kn), full) <= 1e-12


@pytest.mark.parametrize("with_state", [False, True])
def test_varlen_matches_per_sequence(with_state):
    bounds = [0, 5, 5, 12, 16]  # includes an empty sequence
    x, _ = make(B=1, T=16, seed=3)
    N = len(bounds) - 1
    s = make(B=N, T=1, seed=4)[1] if with_state else None
    cu = torch.tensor(bounds)
    o, (Mk, Mv) = chunk_trellis(*(x[n] for n in ARGS), initial_state=s, output_final_state=True, chunk_size=3,
                                cu_seqlens=cu)
    for n in range(N):
        a, b = bounds[n], bounds[n + 1]
        sn = None if s is None else tuple(t[n:n + 1] for t in s)
        on, (Mkn, Mvn) = chunk_trellis(*(x[name][:, a:b] for name in ARGS), initial_state=sn, output_final_state=True,
                                       chunk_size=3)
        torch.testing.assert_close(o[:, a:b], on, rtol=0, atol=1e-12)
        torch.testing.assert_close(Mk[n:n + 1], Mkn, rtol=0, atol=1e-12)
        torch.testing.assert_close(Mv[n:n + 1], Mvn, rtol=0, atol=1e-12)


@pytest.mark.parametrize("knobs", [dict(), dict(phi="l2_silu", f="softmax", psi="l2_silu", value_objective="decode"),
                                   dict(phi="silu", f="identity", psi="ln_silu"), dict(chunk_mode="delta"),
                                   dict(chunk_mode="delta", phi="l2_silu", value_objective="decode")])
def test_gradcheck(knobs):
    """outer_grad='full' only: first_order is by design not the derivative of the forward."""
    x, s = make(B=1, T=5, H=1, dk=2, dv=3, m=3)

    def fn(*a):
        o, h = chunk_trellis(*a[:6], initial_state=tuple(a[6:]), output_final_state=True, chunk_size=2,
                             outer_grad="full", **knobs)
        return o, *h

    assert torch.autograd.gradcheck(fn, tuple(leaves(x, s)), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("knobs,gamma_max", [(dict(), 1.0), (dict(chunk_mode="delta"), 0.05),
                                             (dict(phi="identity", f="softmax", value_objective="decode"), 0.01)])
def test_long_sequence_float32(knobs, gamma_max):
    """4096 tokens, C=64, zero initial state, beta = 0.999 except a run of 40 tokens at 0.05 (its
    product, ~1e-52, underflows fp32: the decay must be taken in log space). Forward and backward
    stay finite; where the dynamics are well conditioned (linear write, small steps) fp32 tracks
    fp64. (The LayerNorm write amplifies perturbations of the state over long runs, so there the
    fp32/fp64 gap measures the dynamics, not the op.)"""
    x, _ = make(B=1, T=4096, H=1, dk=4, dv=4, m=4, dtype=torch.float32, state=False, gamma_max=gamma_max)
    with torch.no_grad():
        x["beta"].fill_(0.999)
        x["beta"][:, 1000:1040] = 0.05
    o, (Mk, Mv) = chunk_trellis(*(x[n] for n in ARGS), output_final_state=True, chunk_size=64, **knobs)
    assert o.dtype == Mk.dtype == torch.float32
    assert all(torch.isfinite(t).all() for t in (o, Mk, Mv))
    grads = torch.autograd.grad(o.sum() + Mk.sum() + Mv.sum(), [x[n] for n in ARGS])
    assert all(torch.isfinite(gr).all() for gr in grads)
    if knobs:
        o64, _ = chunk_trellis(*(x[n].detach().double() for n in ARGS), chunk_size=64, **knobs)
        assert ((o.double() - o64).norm() / o64.norm()).item() < 1e-5


# --- dtypes, defaults, errors ------------------------------------------------------------------------

def test_dtypes_and_default_state():
    x, _ = make(B=1, T=5, dtype=torch.bfloat16, state=False)
    o, (Mk, Mv) = chunk_trellis(*(x[n] for n in ARGS), output_final_state=True, chunk_size=2)
    assert o.dtype == torch.bfloat16 and Mk.dtype == Mv.dtype == torch.float32
    B, _, H, dk = x["q"].shape
    zeros = (torch.zeros(B, H, 4, dk), torch.zeros(B, H, 4, 3))
    o2, _ = chunk_trellis(*(x[n] for n in ARGS), initial_state=zeros, chunk_size=2)
    assert torch.equal(o, o2)
    assert chunk_trellis(*(x[n] for n in ARGS))[1] is None


def test_bad_inputs():
    x, s = make(B=2, T=4, H=2, dk=5, dv=3, m=4)
    a = [x[n] for n in ARGS]

    with pytest.raises(TypeError, match="unknown argument"):
        chunk_trellis(*a, mode="fast")
    for name, bad in (("phi", "relu"), ("f", "tanh"), ("psi", "identity"), ("value_objective", "both"),
                      ("outer_grad", "none"), ("chunk_mode", "exact")):
        with pytest.raises(ValueError, match=f"{name}="):
            chunk_trellis(*a, **{name: bad})
    with pytest.raises(ValueError, match="eps"):
        chunk_trellis(*a, eps=0)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="read_eps must be a positive finite float"):
            chunk_trellis(*a, read_eps=bad)
    with pytest.raises(ValueError, match="q and k"):
        chunk_trellis(a[0], a[1][..., :4], *a[2:])
    with pytest.raises(ValueError, match="alpha must share"):
        chunk_trellis(*a[:3], a[3][:, :3], *a[4:])
    with pytest.raises(ValueError, match="beta must have 3 dims"):
        chunk_trellis(*a[:4], a[4][..., None], a[5])
    with pytest.raises(TypeError, match="share one dtype"):
        chunk_trellis(*a[:3], a[3].float(), *a[4:])
    with pytest.raises(TypeError, match=r"gamma must be in the inputs' dtype \(torch.float64\) or float32"):
        chunk_trellis(*a[:5], a[5].half())
    for bad in (0.0, 1.5, float("nan")):
        beta = a[4].clone()
        beta[0, 1, 0] = bad
        with pytest.raises(NonFiniteInputError if bad != bad else ValueError, match=r"beta must lie in \(0, 1\]"):
            chunk_trellis(*a[:4], beta, a[5])
    with pytest.raises(TypeError, match="floating-point"):
        chunk_trellis(a[0].long(), *a[1:])
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        chunk_trellis(*a[:2], a[2].tolist(), *a[3:])
    with pytest.raises(TypeError, match="initial_state must be a tuple"):
        chunk_trellis(*a, initial_state=s[0])
    with pytest.raises(ValueError, match="initial_state Mv"):
        chunk_trellis(*a, initial_state=(s[0], s[1][..., :2]))
    with pytest.raises(ValueError, match="initial_state Mk must be"):
        chunk_trellis(*a, initial_state=(s[0][:1], s[1][:1]))  # batch mismatch would otherwise broadcast
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_trellis(*a, chunk_size=0)
    with pytest.raises(ValueError, match="batch size must be 1"):
        chunk_trellis(*a, cu_seqlens=torch.tensor([0, 4]))
    one = [t[:1] for t in a]
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        chunk_trellis(*one, cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="initial_state has 1 sequences"):
        chunk_trellis(*one, initial_state=(s[0][:1], s[1][:1]), cu_seqlens=torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="value_objective="):
        naive_trellis(*a, value_objective="x")


@pytest.mark.parametrize("op", [chunk_trellis, naive_trellis, recurrent_trellis])
def test_knobs_as_an_object_or_as_keywords(op):
    """The layers pass their knobs as one (already checked) ``TrellisKnobs``; keywords build the same one."""
    x, s = make()
    a = [x[n].detach() for n in ARGS]
    s = tuple(t.detach() for t in s)
    kn = TrellisKnobs(phi="identity", f="softmax", psi="none")
    o_obj, (mk_obj, _) = op(*a, initial_state=s, output_final_state=True, knobs=kn)
    o_kw, (mk_kw, _) = op(*a, initial_state=s, output_final_state=True, phi="identity", f="softmax", psi="none")
    assert torch.equal(o_obj, o_kw) and torch.equal(mk_obj, mk_kw)
    with pytest.raises(TypeError, match="knobs= and knob keywords"):
        op(*a, knobs=kn, phi="silu")
    with pytest.raises(TypeError, match="knobs must be a TrellisKnobs"):
        op(*a, knobs={"phi": "silu"})
