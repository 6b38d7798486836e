"""ChunkCarry: calls that resume mid-chunk equal one call over the whole sequence (both ops), so
chunked prefill + token-by-token decoding reproduces the trained chunk-parallel forward exactly."""
import pytest
import torch
import torch.nn.functional as F

from slotmem.ops.lattice import chunk_lattice, naive_lattice
from slotmem.ops.trellis import chunk_trellis, naive_trellis
from slotmem.ops.utils import ChunkCarry, tree_map

from .conftest import max_err


def lattice_case(B, T):
    inputs = [torch.randn(B, T, 2, 5), F.normalize(torch.randn(B, T, 2, 5), dim=-1), torch.randn(B, T, 2, 6), torch.rand(B, T, 2)]
    return [x.double() for x in inputs], torch.randn(B, 2, 5, 6, dtype=torch.float64)


def trellis_case(B, T):
    inputs = [torch.randn(B, T, 2, 4), F.normalize(torch.randn(B, T, 2, 4), dim=-1), torch.randn(B, T, 2, 3),
              torch.randn(B, T, 2, 5), 0.8 + 0.2 * torch.rand(B, T, 2), 0.3 * torch.rand(B, T, 2)]
    state = (0.3 * torch.randn(B, 2, 5, 4), 0.3 * torch.randn(B, 2, 5, 3))
    return [x.double() for x in inputs], tuple(s.double() for s in state)


CASES = [
    ("lattice", chunk_lattice, naive_lattice, lattice_case, {}),
    ("lattice", chunk_lattice, naive_lattice, lattice_case, dict(slot_renorm="chunk", read="before")),
    ("lattice", chunk_lattice, naive_lattice, lattice_case, dict(slot_renorm="step", outer_grad="first_order")),
    ("lattice", chunk_lattice, naive_lattice, lattice_case, dict(chunk_mode="linearized", objective="similarity")),
    ("trellis", chunk_trellis, naive_trellis, trellis_case, {}),
    ("trellis", chunk_trellis, naive_trellis, trellis_case, dict(value_objective="decode", phi="l2_silu", outer_grad="first_order")),
    ("trellis", chunk_trellis, naive_trellis, trellis_case, dict(chunk_mode="delta")),
    ("trellis", chunk_trellis, naive_trellis, trellis_case, dict(chunk_mode="delta", value_objective="decode", outer_grad="full")),
]
IDS = [f"{c[0]}-{'-'.join(c[4].values()) or 'defaults'}" for c in CASES]


def run_split(op, inputs, state, splits, C, **kn):
    carry, outs, t = ChunkCarry.start(state), [], 0
    for n in splits:
        o, carry = op(*(x[:, t:t + n] for x in inputs), initial_state=carry, output_final_state=True, chunk_size=C, **kn)
        outs.append(o)
        t += n
    return torch.cat(outs, 1), carry


@pytest.mark.parametrize("name,op,naive,case,kn", CASES, ids=IDS)
@pytest.mark.parametrize("splits", [[1] * 12, [5, 1, 1, 5], [3, 9], [8, 4]])
def test_any_split_equals_one_call(name, op, naive, case, kn, splits):
    inputs, state = case(2, 12)
    o, s = op(*inputs, initial_state=state, output_final_state=True, chunk_size=4, **kn)
    o_split, carry = run_split(op, inputs, state, splits, 4, **kn)
    assert max_err(o, o_split) < 1e-10
    tree_map(lambda a, b: pytest.approx(0.0, abs=1e-10) == max_err(a, b), s, carry.state)  # 12 % 4 == 0: same state
    assert max_err(carry.offset, torch.zeros(2, dtype=torch.long)) == 0


@pytest.mark.parametrize("name,op,naive,case,kn", CASES, ids=IDS)
def test_carry_chunk_equals_carry_naive(name, op, naive, case, kn):
    inputs, state = case(2, 11)
    o_c, c_c = run_split(op, inputs, state, [3, 6, 2], 4, **kn)
    o_n, c_n = run_split(naive, inputs, state, [3, 6, 2], 4, **kn)
    assert max_err(o_c, o_n) < 1e-10
    tree_map(lambda a, b: None if max_err(a.double(), b.double()) < 1e-10 else pytest.fail("carry differs"), c_c, c_n)


@pytest.mark.parametrize("name,op,naive,case,kn", CASES[:1] + CASES[4:5], ids=[IDS[0], IDS[4]])
def test_rows_at_different_offsets(name, op, naive, case, kn):
    """Rows that consumed different numbers of tokens continue together (T = 1 and T > 1 calls)."""
    inputs, state = case(2, 14)
    lens = [3, 6]  # tokens already consumed per row
    carries, refs = [], []
    for i, n in enumerate(lens):
        row = [x[i:i + 1] for x in inputs]
        _, c = op(*(x[:, :n] for x in row), initial_state=ChunkCarry.start(tree_map(lambda t: t[i:i + 1], state)),
                  output_final_state=True, chunk_size=4, **kn)
        carries.append(c)
        refs.append(op(*(x[:, :n + 6] for x in row), initial_state=tree_map(lambda t: t[i:i + 1], state), chunk_size=4, **kn)[0])
    carry = tree_map(lambda *xs: torch.cat(xs, 0), *carries)
    nxt = [torch.stack([x[i, n:n + 6] for i, n in enumerate(lens)]) for x in inputs]
    outs = []
    for a, b in [(0, 1), (1, 2), (2, 6)]:  # two single tokens, then four at once
        o, carry = op(*(x[:, a:b] for x in nxt), initial_state=carry, output_final_state=True, chunk_size=4, **kn)
        outs.append(o)
    out = torch.cat(outs, 1)
    for i, n in enumerate(lens):
        assert max_err(out[i:i + 1], refs[i][:, n:n + 6]) < 1e-10


@pytest.mark.parametrize("name,op,naive,case,kn", CASES[:1] + CASES[4:5], ids=[IDS[0], IDS[4]])
def test_gradients_through_carried_calls(name, op, naive, case, kn):
    inputs, state = case(1, 9)
    leaves = [x.clone().requires_grad_() for x in inputs]
    o, _ = op(*leaves, initial_state=state, chunk_size=4, **kn)
    cot = torch.randn_like(o)
    grads = torch.autograd.grad((o * cot).sum(), leaves)
    leaves2 = [x.clone().requires_grad_() for x in inputs]
    o2, _ = run_split(op, leaves2, state, [2, 1, 6], 4, **kn)
    grads2 = torch.autograd.grad((o2 * cot).sum(), leaves2)
    for a, b in zip(grads, grads2):
        assert max_err(a, b) < 1e-10


def test_carry_errors():
    inputs, state = lattice_case(2, 3)
    bad = ChunkCarry(state, state, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="offset must lie"):
        chunk_lattice(*inputs, initial_state=bad, chunk_size=4)
    with pytest.raises(ValueError, match="offset must be an int tensor"):
        chunk_lattice(*inputs, initial_state=ChunkCarry(state, state, torch.zeros(3, dtype=torch.long)), chunk_size=4)
    with pytest.raises(ValueError, match="initial_state"):
        chunk_lattice(*inputs, initial_state=ChunkCarry(state, state[:, :1], torch.zeros(2, dtype=torch.long)), chunk_size=4)
    with pytest.raises(ValueError, match="initial_state must be"):
        chunk_lattice(*inputs, initial_state=state[:1])
