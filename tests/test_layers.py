"""Slot-memory layers (Lattice, Trellis): chaining with conv + recurrent caches, decode ==
forward, padding masks, packed sequences, errors."""
import pytest
import torch

from slotmem.layers import LatticeAttention, TrellisAttention, build_mixer
from slotmem.modules import RecurrentCache

from .conftest import max_err, prefill_then_decode

MIXERS = ["lattice", "trellis"]


@pytest.fixture(params=MIXERS)
def name(request):
    return request.param


def make_layer(name, **kw):
    kw = dict(dict(num_slots=8, chunk_size=1), **kw)
    return build_mixer(name, 32, 2, layer_idx=0, **kw).double()


@pytest.mark.parametrize("T1", [1, 2, 5])  # 1 and 2 are shorter than the conv width 4
def test_layer_chaining_with_caches(name, T1):
    layer = make_layer(name)
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full, _, _ = layer(x)
    cache = RecurrentCache()
    a, _, cache = layer(x[:, :T1], past_key_values=cache, use_cache=True)
    b, _, cache = layer(x[:, T1:], past_key_values=cache, use_cache=True)
    assert max_err(full, torch.cat([a, b], 1)) < 1e-10
    assert cache.get_seq_length() == 9


@pytest.mark.parametrize("C", [1, 4])  # C=4: the 4-token prefill ends on a boundary, decoding crosses two more
def test_prefill_then_token_by_token_decode_equals_forward(name, C):
    layer = make_layer(name, chunk_size=C)
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    full, _, _ = layer(x)
    decoded, cache = prefill_then_decode(layer, x)
    assert max_err(full, decoded) < 1e-10
    state = cache[0]["recurrent_state"]
    states = state if isinstance(state, tuple) else (state,)
    assert sum(s[0].numel() for s in states) == layer.state_size()
    assert cache[0]["conv_state"].shape == (2, layer.conv.hidden_size, 3)


@pytest.mark.parametrize("T1", [3, 5, 8])
def test_chunked_layer_chains_at_any_split(name, T1):
    """The cache carries the chunk grid, so a chunked layer chains at any split, not only at chunk ends."""
    layer = make_layer(name, chunk_size=4)
    x = torch.randn(1, 12, 32, dtype=torch.float64)
    full, _, _ = layer(x)
    a, _, cache = layer(x[:, :T1], use_cache=True)
    b, _, _ = layer(x[:, T1:], past_key_values=cache, use_cache=True)
    assert max_err(full, torch.cat([a, b], 1)) < 1e-10


def test_padded_batch_equals_per_sample(name):
    """Left padding is unpadded, not zeroed: each row equals its own unpadded run."""
    layer = make_layer(name, chunk_size=4)
    lens = [7, 3, 5]
    x = torch.randn(3, 7, 32, dtype=torch.float64)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, 7 - n:] = 1
    out, _, _ = layer(x, attention_mask=mask)
    for i, n in enumerate(lens):
        ref, _, _ = layer(x[i:i + 1, 7 - n:])
        assert max_err(out[i:i + 1, 7 - n:], ref) < 1e-10
        assert out[i, :7 - n].abs().max() == 0 if n < 7 else True


def test_cu_seqlens_equals_per_sequence(name):
    layer = make_layer(name, chunk_size=4)
    lens = [3, 6, 2]
    x = torch.randn(1, 11, 32, dtype=torch.float64)
    cu = torch.tensor([0, 3, 9, 11])
    out, _, _ = layer(x, cu_seqlens=cu)
    for a, b in zip(cu[:-1], cu[1:]):
        ref, _, _ = layer(x[:, a:b])
        assert max_err(out[:, a:b], ref) < 1e-10


VARIANTS = [("lattice", dict(eta_mode="slot")), ("lattice", dict(code_activation="softmax", slot_renorm="step")),
            ("lattice", dict(num_slots=40, learn_initial_state=False)), ("lattice", dict(chunk_mode="linearized", read="before")),
            ("trellis", dict(learn_initial_state=True)), ("trellis", dict(phi="identity", f="softmax", psi="l2_silu")),
            ("trellis", dict(value_objective="decode", qk_l2norm=True, gamma_mode="sigmoid")),
            ("trellis", dict(outer_grad="full", num_slots=3)), ("trellis", dict(forget_gate=False)),
            ("trellis", dict(gamma_mode="key_normalized")),
            ("trellis", dict(learn_initial_state=True, forget_to_initial_state="both"))]


@pytest.mark.parametrize("variant,kw", VARIANTS)
def test_variants_run_and_backprop(variant, kw):
    layer = make_layer(variant, chunk_size=4, **kw).float()
    x = torch.randn(2, 10, 32, requires_grad=True)
    o, _, _ = layer(x)
    o.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)


def test_initial_slots_are_unit_and_orthonormal():
    layer = LatticeAttention(64, 2, num_slots=16)
    S0 = layer.initial_state.detach()
    assert max_err(S0 @ S0.transpose(-1, -2), torch.eye(16).expand(2, 16, 16)) < 1e-5


def test_trellis_gates_start_in_range():
    layer = TrellisAttention(64, 4, num_slots=16)
    beta = torch.sigmoid(layer.beta_proj(torch.zeros(1, 64)))
    assert ((beta >= 0.9) & (beta <= 0.99)).all()
    gamma = 0.05 * torch.sigmoid(layer.gamma_proj(torch.zeros(1, 64)))  # default: bounded, gamma_max 0.05
    assert layer.gamma_mode == "sigmoid" and torch.allclose(gamma, torch.full_like(gamma, 0.025))  # min(1/16, 0.05/2)
    unbounded = TrellisAttention(64, 4, num_slots=16, gamma_mode="softplus")
    gamma = torch.nn.functional.softplus(unbounded.gamma_proj(torch.zeros(1, 64)))
    assert torch.allclose(gamma, torch.full_like(gamma, 1 / 16))


def test_trellis_key_normalized_step(trellis_op_inputs):
    """gamma_mode='key_normalized' hands the op gamma = gamma_max * sigmoid(W x + b) / (||k||^2 + 0.01),
    starting at gamma ||k||^2 ~ gamma_max / 2 whatever the key norm."""
    layer = make_layer("trellis", chunk_size=4, gamma_mode="key_normalized", gamma_max=0.8)
    with torch.no_grad():
        layer.gamma_proj.weight.zero_()  # sigmoid(bias) = 1/2 at init
    layer(torch.randn(2, 9, 32, dtype=torch.float64))
    seen = trellis_op_inputs
    k2 = seen["k"].pow(2).sum(-1)
    assert max_err(seen["gamma"], 0.4 / (k2 + 1e-2)) < 1e-6  # gates are computed in float32


def test_trellis_without_forget_gate_is_beta_one():
    """forget_gate=False runs the op with beta = 1: the same output as a forget gate saturated at 1."""
    torch.manual_seed(0)
    gated = make_layer("trellis", chunk_size=4)
    torch.manual_seed(0)
    plain = make_layer("trellis", chunk_size=4, forget_gate=False)
    assert plain.beta_proj is None
    with torch.no_grad():
        gated.beta_proj.weight.zero_()
        gated.beta_proj.bias.fill_(1e4)  # logsigmoid(1e4) = 0 exactly in float64: beta = 1
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("beta_proj")})
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    assert max_err(plain(x)[0], gated(x)[0]) == 0


def decode_and_packing_match_forward(layer, x):
    """Asserts that prefill + token-by-token decode and the two rows packed into one sequence reproduce
    the forward of x [2, 12, hidden]; returns that forward."""
    full, _, _ = layer(x)
    decoded, _ = prefill_then_decode(layer, x)
    assert max_err(full, decoded) < 1e-10
    packed, _, _ = layer(x.reshape(1, 24, x.shape[-1]), cu_seqlens=torch.tensor([0, 12, 24]))
    assert max_err(packed.reshape(2, 12, x.shape[-1]), full) < 1e-10
    return full


@pytest.mark.parametrize("C,memories", [(1, "both"), (4, "both"), (4, "key"), (4, "value")])
def test_trellis_forget_to_initial_state_decodes_and_packs_like_forward(C, memories):
    """The rest state (M_0) is passed on every call: token-by-token decode and packed sequences
    reproduce the full forward, and the pull toward M_0 changes the output."""
    torch.manual_seed(0)
    layer = make_layer("trellis", chunk_size=C, learn_initial_state=True, forget_to_initial_state=memories)
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    full = decode_and_packing_match_forward(layer, x)
    layer.forget_to_initial_state = "none"
    assert max_err(layer(x)[0], full) > 1e-3


def test_trellis_fixed_slot_codes_get_no_gradient_and_stay_in_the_state_dict():
    layer = make_layer("trellis", learn_slot_codes=False)
    assert not layer.alpha_proj.weight.requires_grad and "alpha_proj.weight" in layer.state_dict()
    layer(torch.randn(2, 5, 32, dtype=torch.float64))[0].square().sum().backward()
    assert layer.alpha_proj.weight.grad is None and layer.qkv_proj.weight.grad is not None
    with pytest.raises(ValueError, match="learn_slot_codes"):
        TrellisAttention(32, 2, learn_slot_codes="no")


@pytest.mark.parametrize("chunk_mode", ["stale", "delta"])
def test_trellis_slot_codes_from_conv_features_decode_and_chain_like_forward(chunk_mode):
    """slot_code_source="conv": alpha reads the short-convolved features, so token-by-token decoding (the conv
    cache) and packed sequences reproduce the forward; the codes of a token change with its neighbours."""
    torch.manual_seed(0)
    layer = make_layer("trellis", chunk_size=4, slot_code_source="conv", chunk_mode=chunk_mode)
    assert layer.alpha_proj.in_features == layer.conv.hidden_size
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    decode_and_packing_match_forward(layer, x)
    codes = []
    layer.alpha_proj.register_forward_hook(lambda m, i, o: codes.append(o))
    y = x.clone()
    y[:, 4] += 1.0  # a neighbour of token 5 changes: its code changes with "conv", not with "input"
    layer(x), layer(y)
    assert max_err(codes[0][:, 5], codes[1][:, 5]) > 1e-3
    with pytest.raises(ValueError, match="slot_code_source"):
        TrellisAttention(32, 2, slot_code_source="qkv")


def test_slot_code_overlap_is_the_mean_squared_cosine_between_tokens():
    """Against the brute-force T x T cosines of slot-centred codes (float64); packed sequences give the
    mean over sequences; identical codes give 1, a code constant over the slots counts as 0."""
    from slotmem.layers.trellis import slot_code_overlap

    torch.manual_seed(0)
    a = torch.randn(2, 7, 3, 5, dtype=torch.float64)
    c = a - a.mean(-1, keepdim=True)
    c = c / c.norm(dim=-1, keepdim=True)
    cos2 = torch.einsum("bthm,bshm->bhts", c, c).square()
    off = (cos2.sum((-1, -2)) - cos2.diagonal(dim1=-2, dim2=-1).sum(-1)) / (7 * 6)
    assert max_err(slot_code_overlap(a), off.mean()) < 1e-12
    packed = slot_code_overlap(a.reshape(1, 14, 3, 5), torch.tensor([0, 7, 14]))
    assert max_err(packed, off.mean()) < 1e-12
    same = a[:, :1].expand(2, 7, 3, 5)
    assert max_err(slot_code_overlap(same), torch.tensor(1.0, dtype=torch.float64)) < 1e-12
    assert slot_code_overlap(torch.ones(1, 4, 1, 5)) == 0


def test_trellis_slot_code_decorrelation_sets_an_auxiliary_loss_in_training_only():
    from slotmem.layers import take_auxiliary_loss
    from slotmem.layers.trellis import slot_code_overlap

    torch.manual_seed(0)
    layer = make_layer("trellis", slot_code_decorrelation=0.5)
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    layer(x)
    alpha = layer.alpha_proj(x).reshape(2, 9, 2, 8)
    assert max_err(layer.aux_loss, 0.5 * slot_code_overlap(alpha)) < 1e-12
    aux = take_auxiliary_loss(layer)
    aux.backward()  # the regulariser trains the slot codes
    assert layer.alpha_proj.weight.grad.abs().sum() > 0 and layer.aux_loss is None and take_auxiliary_loss(layer) is None
    layer.eval()
    layer(x)
    assert layer.aux_loss is None
    plain = make_layer("trellis", slot_code_decorrelation=0.0)  # off: no regulariser
    plain(x)
    assert plain.training and plain.aux_loss is None
    assert make_layer("trellis").slot_code_decorrelation > 0  # on by default
    for bad in (-1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="slot_code_decorrelation"):
            TrellisAttention(32, 2, slot_code_decorrelation=bad)


def test_trellis_initial_state_scale_sets_the_row_norm_of_learned_m0():
    layer = make_layer("trellis", learn_initial_state=True, initial_state_scale=0.1)
    for M in (layer.initial_key_state, layer.initial_value_state):
        assert torch.allclose(M.norm(dim=-1), torch.full(M.shape[:2], 0.1, dtype=M.dtype))
    with pytest.raises(ValueError, match="initial_state_scale=0.1 needs learn_initial_state=True"):
        TrellisAttention(32, 2, initial_state_scale=0.1)
    with pytest.raises(ValueError, match="initial_state_scale must be a finite positive number"):
        TrellisAttention(32, 2, learn_initial_state=True, initial_state_scale=0.0)


def test_trellis_forget_to_one_memory_pulls_only_that_memory():
    """"key" passes M_0's key memory and a zero value rest state (a zero rest state == decay toward 0,
    tests/test_trellis_op.py); "value" the reverse."""
    torch.manual_seed(0)
    layer = make_layer("trellis", learn_initial_state=True, forget_to_initial_state="key")
    Mk, Mv = layer._rest_state()
    assert torch.equal(Mk, layer.initial_key_state.float()) and not Mv.any()
    layer.forget_to_initial_state = "value"
    Mk, Mv = layer._rest_state()
    assert not Mk.any() and torch.equal(Mv, layer.initial_value_state.float())


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="code_activation"):
        LatticeAttention(32, 2, code_activation="relu")
    with pytest.raises(TypeError, match="unknown argument"):
        LatticeAttention(32, 2, slots=4)
    with pytest.raises(ValueError, match="not divisible"):
        LatticeAttention(30, 4)
    with pytest.raises(ValueError, match="eta_max"):
        LatticeAttention(32, 2, eta_max=float("nan"))
    with pytest.raises(ValueError, match="slot_renorm"):
        LatticeAttention(32, 2, slot_renorm="often")
    with pytest.raises(ValueError, match="beta_init"):
        TrellisAttention(32, 2, beta_init=(0.99, 0.9))
    with pytest.raises(ValueError, match="forget_gate"):
        TrellisAttention(32, 2, forget_gate="no")
    with pytest.raises(ValueError, match="forget_to_initial_state='both' needs learn_initial_state=True"):
        TrellisAttention(32, 2, forget_to_initial_state="both")
    with pytest.raises(ValueError, match="forget_to_initial_state=True is not valid"):
        TrellisAttention(32, 2, learn_initial_state=True, forget_to_initial_state=True)
    with pytest.raises(TypeError, match="unknown argument"):
        TrellisAttention(32, 2, phi_="silu")
    with pytest.raises(ValueError, match="phi"):
        TrellisAttention(32, 2, phi="tanh")
    layer = make_layer("lattice")
    with pytest.raises(ValueError, match="attention_mask"):
        layer(torch.randn(2, 5, 32, dtype=torch.float64), attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="hidden_states"):
        layer(torch.randn(5, 32, dtype=torch.float64))


def test_short_conv_handles_empty_packed_segment():
    """An all-padding row packs to a zero-length segment: its conv state must pass through unchanged."""
    from slotmem.modules import ShortConvolution

    conv = ShortConvolution(4, 4)
    x, cache = torch.randn(1, 5, 4), torch.randn(2, 4, 3)
    y, state = conv(x, cache=cache, output_final_state=True, cu_seqlens=torch.tensor([0, 0, 5]))
    y_ref, state_ref = conv(x, cache=cache[1:], output_final_state=True)
    assert max_err(y, y_ref) < 1e-6
    assert max_err(state[0], cache[0]) == 0 and max_err(state[1:], state_ref) < 1e-6
