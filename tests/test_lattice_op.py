"""Lattice op: chunk form vs the float64 loop, properties of the update, chaining, varlen, errors."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from slotmem.ops.lattice import LatticeKnobs, chunk_lattice, default_state, naive_lattice, recurrent_lattice

from .conftest import max_err

KNOB_GRID = [
    dict(objective=o, slot_renorm=r, chunk_mode=c, read=rd, outer_grad=g)
    for o, r, c, rd, g in itertools.product(["reconstruct", "similarity"], ["none", "step", "chunk"],
                                           ["stale", "linearized"], ["after", "before"], ["full", "first_order"])
]


def make_inputs(B=2, T=11, H=2, m=5, d=6, per_slot=False, dtype=torch.float64):
    q = torch.randn(B, T, H, m, dtype=dtype)
    k = F.normalize(torch.randn(B, T, H, m, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, d, dtype=dtype)
    eta = torch.rand(B, T, H, m, dtype=dtype) if per_slot else torch.rand(B, T, H, dtype=dtype)
    S0 = torch.randn(B, H, m, d, dtype=dtype)
    return q, k, v, eta, S0


def run_with_grads(fn, inputs, cot_o=None, cot_s=None, **kw):
    leaves = [x.clone().requires_grad_() for x in inputs]
    o, s = fn(*leaves[:4], initial_state=leaves[4], output_final_state=True, **kw)
    cot_o = torch.randn_like(o) if cot_o is None else cot_o
    cot_s = torch.randn_like(s) if cot_s is None else cot_s
    ((o * cot_o).sum() + (s * cot_s).sum()).backward()
    return o, s, [x.grad for x in leaves], cot_o, cot_s


def assert_same(fn_a, fn_b, inputs, kw_a, kw_b, tol):
    oa, sa, ga, co, cs = run_with_grads(fn_a, inputs, **kw_a)
    ob, sb, gb, _, _ = run_with_grads(fn_b, inputs, co, cs, **kw_b)
    assert max_err(oa, ob) <= tol
    assert max_err(sa, sb) <= tol
    for name, a, b in zip(["q", "k", "v", "eta", "state"], ga, gb):
        assert max_err(a, b) <= tol, name


@pytest.mark.parametrize("knobs", KNOB_GRID, ids=lambda k: "-".join(k.values()))
@pytest.mark.parametrize("per_slot", [False, True], ids=["eta_head", "eta_slot"])
def test_chunk1_equals_naive(knobs, per_slot):
    inputs = make_inputs(per_slot=per_slot)
    assert_same(naive_lattice, chunk_lattice, inputs, dict(**knobs), dict(chunk_size=1, **knobs), 1e-10)


@pytest.mark.parametrize("knobs", KNOB_GRID, ids=lambda k: "-".join(k.values()))
@pytest.mark.parametrize("C", [3, 8])
def test_chunk_equals_stale_loop(knobs, C):
    inputs = make_inputs(T=13)
    assert_same(naive_lattice, chunk_lattice, inputs, dict(chunk_size=C, **knobs), dict(chunk_size=C, **knobs), 1e-10)


def test_recurrent_is_exact_recurrence():
    inputs = make_inputs()
    assert_same(naive_lattice, recurrent_lattice, inputs, {}, {}, 1e-10)


def test_update_is_orthogonal_and_norm_update_exact():
    """Each slot's step is orthogonal to the slot; n² <- n² + b² (||r||² - p²)."""
    q, k, v, eta, S = make_inputs(T=6)
    for t in range(6):
        _, S_new = naive_lattice(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], eta[:, t:t + 1], initial_state=S, output_final_state=True)
        step = S_new - S
        assert (step * S).sum(-1).abs().max() < 1e-12
        n = S.norm(dim=-1)
        Shat = S / n[..., None]
        r = v[:, t] - torch.einsum("bhm,bhmd->bhd", k[:, t], Shat)
        p = torch.einsum("bhmd,bhd->bhm", Shat, r)
        b = eta[:, t, :, None] * k[:, t] / n
        expected = n ** 2 + b ** 2 * (r.pow(2).sum(-1, keepdim=True) - p ** 2)
        assert max_err(S_new.pow(2).sum(-1), expected) < 1e-12
        S = S_new


def test_step_renorm_keeps_unit_slots():
    q, k, v, eta, S = make_inputs(T=9)
    _, S_final = chunk_lattice(q, k, v, eta, initial_state=S, output_final_state=True, chunk_size=4, slot_renorm="step")
    assert max_err(S_final.norm(dim=-1), torch.ones_like(S_final[..., 0])) < 1e-12


def test_first_order_differs_from_full_only_in_gradients():
    inputs = make_inputs()
    of, sf, gf, co, cs = run_with_grads(chunk_lattice, inputs, chunk_size=4)
    o1, s1, g1, _, _ = run_with_grads(chunk_lattice, inputs, co, cs, chunk_size=4, outer_grad="first_order")
    assert max_err(of, o1) < 1e-12 and max_err(sf, s1) < 1e-12
    assert max_err(gf[4], g1[4]) > 1e-3  # the state gradient loses the path through r, p, n


@pytest.mark.parametrize("C,T1", [(1, 5), (4, 8), (4, 4), (64, 64)])
def test_chaining(C, T1):
    q, k, v, eta, S = make_inputs(T=70 if C == 64 else 13)
    o, s = chunk_lattice(q, k, v, eta, initial_state=S, output_final_state=True, chunk_size=C)
    oa, sa = chunk_lattice(q[:, :T1], k[:, :T1], v[:, :T1], eta[:, :T1], initial_state=S, output_final_state=True, chunk_size=C)
    ob, sb = chunk_lattice(q[:, T1:], k[:, T1:], v[:, T1:], eta[:, T1:], initial_state=sa, output_final_state=True, chunk_size=C)
    assert max_err(o, torch.cat([oa, ob], 1)) < 1e-10 and max_err(s, sb) < 1e-10


@pytest.mark.parametrize("T", [1, 63, 100])
def test_odd_lengths_and_dims(T):
    inputs = make_inputs(B=1, T=T, H=1, m=7, d=5)
    o, s = chunk_lattice(*inputs[:4], initial_state=inputs[4], output_final_state=True, chunk_size=16)
    o_ref, s_ref = naive_lattice(*inputs[:4], initial_state=inputs[4], output_final_state=True, chunk_size=16)
    assert o.shape == (1, T, 1, 5) and max_err(o, o_ref) < 1e-10 and max_err(s, s_ref) < 1e-10


def test_varlen_equals_per_sequence():
    lens = [5, 1, 9, 0, 4]
    q, k, v, eta, _ = make_inputs(B=1, T=sum(lens))
    S = torch.randn(len(lens), 2, 5, 6, dtype=torch.float64)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int64)
    o, s = chunk_lattice(q, k, v, eta, initial_state=S, output_final_state=True, chunk_size=4, cu_seqlens=cu)
    for n in range(len(lens)):
        a, b = cu[n], cu[n + 1]
        on, sn = chunk_lattice(q[:, a:b], k[:, a:b], v[:, a:b], eta[:, a:b], initial_state=S[n:n + 1], output_final_state=True, chunk_size=4)
        assert max_err(o[:, a:b], on) < 1e-12 and max_err(s[n:n + 1], sn) < 1e-12


def test_default_state_is_unit_slots():
    q, k, v, eta, _ = make_inputs(m=9, d=4)
    o, _ = chunk_lattice(q, k, v, eta, chunk_size=4)
    o_ref, _ = naive_lattice(q, k, v, eta, chunk_size=4, initial_state=default_state(2, 2, 9, 4, torch.float64, "cpu"))
    assert max_err(o, o_ref) < 1e-12


@pytest.mark.parametrize("knobs", [{}, dict(chunk_mode="linearized", slot_renorm="step", read="before")])
def test_gradcheck(knobs):
    inputs = [x.requires_grad_() for x in make_inputs(B=1, T=5, H=1, m=3, d=4)]

    def fn(q, k, v, eta, S):
        o, s = chunk_lattice(q, k, v, eta, initial_state=S, output_final_state=True, chunk_size=2, **knobs)
        return o, s

    assert torch.autograd.gradcheck(fn, inputs)


def test_float32_inputs_give_float32_output_and_state():
    q, k, v, eta, S = (x.float() for x in make_inputs())
    o, s = chunk_lattice(q, k, v, eta, initial_state=S, output_final_state=True)
    assert o.dtype == torch.float32 and s.dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    q, k, v, eta, S = make_inputs()
    with pytest.raises(ValueError, match="slot_renorm"):
        chunk_lattice(q, k, v, eta, slot_renorm="sometimes")
    with pytest.raises(TypeError, match="unknown argument"):
        chunk_lattice(q, k, v, eta, objectve="reconstruct")
    with pytest.raises(ValueError, match="q and k"):
        chunk_lattice(q, k[..., :3], v, eta)
    with pytest.raises(ValueError, match="eta"):
        chunk_lattice(q, k, v, eta[:, :, :1])
    with pytest.raises(ValueError, match="initial_state"):
        chunk_lattice(q, k, v, eta, initial_state=S[:, :, :3])
    with pytest.raises(TypeError, match="dtype"):
        chunk_lattice(q, k, v.float(), eta)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_lattice(q, k, v, eta, chunk_size=0)
    with pytest.raises(ValueError, match="batch size must be 1"):
        chunk_lattice(q, k, v, eta, cu_seqlens=torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="end at T"):
        chunk_lattice(q[:1], k[:1], v[:1], eta[:1], cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="4 dims"):
        chunk_lattice(q[0], k, v, eta)


@pytest.mark.parametrize("op", [chunk_lattice, naive_lattice, recurrent_lattice])
def test_knobs_as_an_object_or_as_keywords(op):
    """The layers pass their knobs as one (already checked) ``LatticeKnobs``; keywords build the same one."""
    q, k, v, eta, S0 = make_inputs()
    kn = LatticeKnobs(slot_renorm="step", read="before")
    o_obj, s_obj = op(q, k, v, eta, initial_state=S0, output_final_state=True, knobs=kn)
    o_kw, s_kw = op(q, k, v, eta, initial_state=S0, output_final_state=True, slot_renorm="step", read="before")
    assert torch.equal(o_obj, o_kw) and torch.equal(s_obj, s_kw)
    with pytest.raises(TypeError, match="knobs= and knob keywords"):
        op(q, k, v, eta, knobs=kn, read="after")
    with pytest.raises(TypeError, match="knobs must be a LatticeKnobs"):
        op(q, k, v, eta, knobs={"read": "after"})
