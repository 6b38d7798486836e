"""HF-native models: configs and their errors, every registered mixer in a model (backward,
decode == forward, constant decode memory, padding, Auto round trip), generation (cache vs no
cache, left-padded batches, sampling), the chunk-form / exact-decode gap, the CLI, the README.

Tests parametrized over ``MIXERS`` cover whatever is registered (Lattice, Trellis, baselines);
the Lattice/Trellis-specific ones name both families and need ``"trellis"`` registered."""
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache
from transformers.utils import logging as hf_logging

import slotmem  # noqa: F401  (registers the Auto classes)
from slotmem.cli import main as cli_main
from slotmem.configs import builtin_path
from slotmem.layers import MIXERS
from slotmem.models import (
    LatticeConfig,
    LatticeForCausalLM,
    LatticeModel,
    RecurrentCache,
    SlotMemConfig,
    SlotMemForCausalLM,
    SlotMemModel,
    TrellisConfig,
    TrellisForCausalLM,
    TrellisModel,
    config_from_dict,
    load_config_file,
    model_for_causal_lm,
)
from slotmem.models import CACHE_NAME
from slotmem.models.modeling_slotmem import causal_lm_loss

from .conftest import max_err

hf_logging.disable_progress_bar()


def cache_of(out):
    """The generation cache of a model / generate output, under the installed transformers' name."""
    return getattr(out, CACHE_NAME)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes: one intra-op thread is faster, and far faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

VOCAB, HIDDEN, HEADS, LAYERS = 37, 32, 2, 2
CONFIG_DIR = builtin_path("models/lattice-tiny").parent  # the built-in model configs
ALL_MIXERS = sorted(MIXERS)
FAMILIES = {"lattice": (LatticeConfig, LatticeForCausalLM), "trellis": (TrellisConfig, TrellisForCausalLM)}


def tiny_mixer_kwargs(name, chunk_size=1):
    """Small-state kwargs for any registered mixer (only the arguments its constructor takes)."""
    params = inspect.signature(MIXERS[name].__init__).parameters
    kw = {}
    if "num_slots" in params:
        kw["num_slots"] = 8
    if "chunk_size" in params:
        kw["chunk_size"] = chunk_size
    if "d_state" in params:
        kw["d_state"] = 8
    return kw


def tiny_config(mixer="lattice", chunk_size=1, **kw):
    base = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_heads=HEADS,
                intermediate_size=64, mixer_kwargs=tiny_mixer_kwargs(mixer, chunk_size))
    base.update(kw)
    if mixer in FAMILIES:
        return FAMILIES[mixer][0](**base)
    return SlotMemConfig(mixer=mixer, **base)


def tiny_model(mixer="lattice", chunk_size=1, **kw):
    return model_for_causal_lm(tiny_config(mixer, chunk_size, **kw)).eval()


def left_pad(rows, pad_id=0):
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.as_tensor(r)
        mask[i, T - len(r):] = 1
    return ids, mask


def greedy(model, ids, n, **kw):
    out = model.generate(ids, max_new_tokens=n, do_sample=False, return_dict_in_generate=True, output_logits=True,
                         pad_token_id=0, **kw)
    return out.sequences, torch.stack(out.logits, 1), out


# --------------------------------------------------------------------------- configs


def test_config_defaults_layout_and_json_round_trip(tmp_path):
    c = LatticeConfig(hidden_size=96, num_heads=3, attn_layers=[2, 0], num_hidden_layers=4, attn_window=16)
    assert c.mixer == "lattice" and c.model_type == "slotmem_lattice"
    assert c.intermediate_size == 256  # 8/3 * 96 rounded up to a multiple of 64
    assert c.attn_layers == [0, 2]
    assert c.mixer_types == ["attention", "lattice", "attention", "lattice"]
    assert c.layer_mixer(0) == ("attention", {"window_size": 16})
    c.save_pretrained(tmp_path)
    back = AutoConfig.from_pretrained(tmp_path)
    assert type(back) is LatticeConfig and back.to_diff_dict() == c.to_diff_dict()
    assert type(AutoConfig.for_model("slotmem_trellis")) is TrellisConfig


BAD_CONFIGS = [
    (dict(mixer="no_such_mixer"), ValueError, "unknown mixer"),
    (dict(hidden_size=30, num_heads=4), ValueError, "not divisible"),
    (dict(num_attention_heads=3), ValueError, "not divisible"),  # the HF-standard alias of num_heads
    (dict(attn_layers=[4]), ValueError, "out of range"),
    (dict(attn_layers=[-1]), ValueError, "out of range"),
    (dict(attn_layers=[1, 1]), ValueError, "duplicates"),
    (dict(attn_layers=[1.0]), TypeError, "attn_layers"),
    (dict(attn_window=8), ValueError, "attn_window"),
    (dict(attn_window=0, attn_layers=[0]), ValueError, "attn_window"),
    (dict(mixer_kwargs={"hidden_size": 8}), ValueError, "must not set"),
    (dict(mixer_kwargs={"layer_idx": 0}), ValueError, "must not set"),
    (dict(num_hidden_layers=0), ValueError, "num_hidden_layers"),
    (dict(vocab_size=2.5), TypeError, "vocab_size"),
    (dict(norm_eps=0.0), ValueError, "norm_eps"),
    (dict(eos_token_id=99, vocab_size=50), ValueError, "eos_token_id"),
    (dict(use_mlp="yes"), TypeError, "use_mlp"),
    (dict(mixer="attention", attn_layers=[0]), ValueError, "already 'attention'"),
    (dict(layer_kwargs={4: {}}), ValueError, r"layer_kwargs names layers \[4\], out of range"),
    (dict(layer_kwargs={"first": {}}), TypeError, "layer indices"),
    (dict(layer_kwargs={0: [1]}), TypeError, r"layer_kwargs\[0\] must be a mapping"),
    (dict(layer_kwargs={1: {"layer_idx": 0}}), ValueError, r"layer_kwargs\[1\] must not set"),
    (dict(layer_kwargs={0: {}, "0": {}}), ValueError, "names layer 0 twice"),
    (dict(attn_layers=[1], layer_kwargs={1: {}}), ValueError, "attention layers"),
]


@pytest.mark.parametrize("kw, err, match", BAD_CONFIGS, ids=[str(sorted(c[0])) for c in BAD_CONFIGS])
def test_bad_configs_raise_clear_errors(kw, err, match):
    base = dict(hidden_size=32, num_heads=4, num_hidden_layers=4)
    with pytest.raises(err, match=match):
        SlotMemConfig(**dict(base, **kw))


def test_layer_kwargs_override_one_layer_and_survive_save_and_load(tmp_path):
    c = TrellisConfig(hidden_size=16, num_heads=1, num_hidden_layers=3, vocab_size=32, use_mlp=False,
                      mixer_kwargs={"num_slots": 4, "chunk_size": 2}, layer_kwargs={1: {"forget_gate": False, "num_slots": 2}})
    assert c.layer_kwargs == {"1": {"forget_gate": False, "num_slots": 2}}  # JSON's key form
    assert c.layer_mixer(0) == ("trellis", {"num_slots": 4, "chunk_size": 2})
    assert c.layer_mixer(1) == ("trellis", {"num_slots": 2, "chunk_size": 2, "forget_gate": False})
    model = model_for_causal_lm(c)
    gated = [layer.mixer.beta_proj is not None for layer in model.model.layers]
    assert gated == [True, False, True] and [layer.mixer.num_slots for layer in model.model.layers] == [4, 2, 4]
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert back.config.layer_kwargs == c.layer_kwargs
    assert [layer.mixer.beta_proj is not None for layer in back.model.layers] == gated


def test_family_configs_fix_their_mixer_and_mixer_errors_name_the_layer():
    with pytest.raises(ValueError, match="always uses mixer='lattice'"):
        LatticeConfig(mixer="trellis")
    with pytest.raises(ValueError, match="always uses mixer='trellis'"):
        TrellisConfig(mixer="gla")
    with pytest.raises(TypeError, match="layer 0: cannot build mixer 'lattice'.*unknown argument"):
        LatticeForCausalLM(LatticeConfig(hidden_size=32, num_heads=2, mixer_kwargs={"slots": 4}))
    with pytest.raises(ValueError, match="layer 0.*code_activation"):
        LatticeModel(LatticeConfig(hidden_size=32, num_heads=2, mixer_kwargs={"code_activation": "relu"}))
    with pytest.raises(TypeError, match="SlotMemConfig"):
        model_for_causal_lm({"mixer": "lattice"})


def test_config_files_reject_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['hiden_size'\]"):
        config_from_dict({"mixer": "lattice", "hiden_size": 64})
    with pytest.raises(ValueError, match="unknown model_type"):
        config_from_dict({"model_type": "llama"})
    (tmp_path / "m.json").write_text(json.dumps({"mixer": "trellis", "hidden_size": 64, "num_heads": 2}))
    c = load_config_file(tmp_path / "m.json")
    assert type(c) is TrellisConfig and c.hidden_size == 64
    (tmp_path / "m.toml").write_text("")
    with pytest.raises(ValueError, match="yaml"):
        load_config_file(tmp_path / "m.toml")


# --------------------------------------------------------------------------- every registered mixer


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_one_backward_step_every_mixer(mixer):
    model = tiny_model(mixer, chunk_size=4).train()
    ids = torch.randint(0, VOCAB, (2, 9))
    out = model(ids, labels=ids)
    assert cache_of(out) is None  # no cache while training
    assert out.logits.shape == (2, 9, VOCAB) and torch.isfinite(out.loss)
    ce = causal_lm_loss(out.logits, ids)  # the loss also holds Trellis's slot-code regulariser (>= 0)
    assert abs(ce.item() - math.log(VOCAB)) < 1.0 and out.loss >= ce - 1e-6  # near-uniform at init
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert torch.isfinite(model(ids, labels=ids).loss)


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_prefill_then_decode_equals_full_forward_and_cache_is_constant(mixer):
    """chunk_size=1 (exact recurrence for Lattice/Trellis). Recurrent mixers: the cache's bytes are
    the same after every decoded token; attention: they grow by the KV of one token."""
    model = tiny_model(mixer, chunk_size=1)
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        cache, steps, sizes = cache_of(out), [out.logits], [cache_of(out).nbytes()]
        for t in range(5, 10):
            o = model(ids[:, t:t + 1], **{CACHE_NAME: cache}, use_cache=True)
            steps.append(o.logits)
            sizes.append(cache.nbytes())
    assert max_err(full, torch.cat(steps, 1)) < 1e-4
    assert cache.get_seq_length() == 10 and len(cache) == LAYERS
    if model.state_size(16) == model.state_size(4096):  # constant-state mixer
        assert len(set(sizes)) == 1, f"{mixer}: cache grew during decoding: {sizes}"
    else:
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_padded_batch_forward_equals_per_sample_forward(mixer):
    """Left and right padding: each row's valid logits equal its own unpadded forward."""
    model = tiny_model(mixer, chunk_size=2)
    rows = [torch.randint(1, VOCAB, (n,)) for n in (7, 3, 5)]
    with torch.no_grad():
        refs = [model(r[None]).logits[0] for r in rows]
        ids, mask = left_pad(rows)
        out = model(ids, attention_mask=mask).logits
        for i, r in enumerate(rows):
            assert max_err(out[i, ids.shape[1] - len(r):], refs[i]) < 1e-4
        ids_r, mask_r = ids.clone(), mask.clone()
        for i, r in enumerate(rows):  # right padding
            ids_r[i], mask_r[i] = 0, 0
            ids_r[i, :len(r)], mask_r[i, :len(r)] = r, 1
        out = model(ids_r, attention_mask=mask_r).logits
        for i, r in enumerate(rows):
            assert max_err(out[i, :len(r)], refs[i]) < 1e-4


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_save_and_auto_reload_give_identical_logits_every_mixer(mixer, tmp_path):
    model = tiny_model(mixer, chunk_size=4)
    ids = torch.randint(0, VOCAB, (2, 6))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back) is type(model) and back.config.mixer == mixer
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


# --------------------------------------------------------------------------- Lattice / Trellis families


@pytest.mark.parametrize("family", ["lattice", "trellis"])
@pytest.mark.parametrize("tied, learn_s0", [(True, True), (False, False)])
def test_auto_round_trip_families(family, tied, learn_s0, tmp_path):
    """AutoModelForCausalLM / AutoModel reload with identical logits; tied weights stay tied and the
    initial slot state (a parameter, or a persistent buffer) round-trips."""
    model = tiny_model(family, chunk_size=4, tie_word_embeddings=tied,
                       mixer_kwargs=dict(tiny_mixer_kwargs(family, 4), learn_initial_state=learn_s0))
    state_name = "initial_state" if family == "lattice" else "initial_key_state"
    with torch.no_grad():  # make the initial state distinguishable from a fresh init
        for block in model.model.layers:
            getattr(block.mixer, state_name).add_(0.01 * torch.randn_like(getattr(block.mixer, state_name)))
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back) is FAMILIES[family][1]
    assert (back.lm_head.weight is back.model.embed_tokens.weight) == tied
    for a, b in zip(model.model.layers, back.model.layers):
        assert torch.equal(getattr(a.mixer, state_name), getattr(b.mixer, state_name))
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert type(base) is {"lattice": LatticeModel, "trellis": TrellisModel}[family]
        assert torch.equal(base(ids).last_hidden_state, model.model(ids).last_hidden_state)


def test_reload_restores_what_the_checkpoint_does_not_hold(tmp_path):
    """Non-persistent mixer buffers (e.g. precomputed RoPE tables) and mixer keys missing from a
    checkpoint are rebuilt from the mixer's constructor, not left as uninitialised memory."""
    from safetensors.torch import load_file, save_file

    from slotmem.layers import register_mixer
    from slotmem.layers.lattice import LatticeAttention

    @register_mixer("_buffered_lattice")
    class BufferedLattice(LatticeAttention):
        def __init__(self, hidden_size, num_heads, **kw):
            super().__init__(hidden_size, num_heads, **kw)
            self.register_buffer("table", torch.arange(4.0) + hidden_size, persistent=False)

        def _mix(self, x, state, cu_seqlens, use_cache):
            o, st = super()._mix(x, state, cu_seqlens, use_cache)
            return o + self.table.sum() * 1e-3, st

    try:
        config = SlotMemConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_heads=HEADS,
                               mixer="_buffered_lattice", mixer_kwargs={"num_slots": 8})
        model = SlotMemForCausalLM(config).eval()
        model.save_pretrained(tmp_path)
        back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert torch.equal(back.model.layers[0].mixer.table, torch.arange(4.0) + HIDDEN)
        ids = torch.randint(0, VOCAB, (1, 5))
        with torch.no_grad():
            assert torch.equal(back(ids).logits, model(ids).logits)
        weights = load_file(tmp_path / "model.safetensors")
        del weights["model.layers.0.mixer.initial_state"]
        save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
        back, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
        assert info["missing_keys"] == {"model.layers.0.mixer.initial_state"}
        S0 = back.model.layers[0].mixer.initial_state.detach()  # a fresh orthonormal init, not garbage
        assert max_err(S0 @ S0.transpose(-1, -2), torch.eye(8).expand(HEADS, 8, 8)) < 1e-5
    finally:
        MIXERS.pop("_buffered_lattice", None)


def test_generic_model_round_trip_hybrid(tmp_path):
    config = SlotMemConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=3, num_heads=HEADS,
                           mixer="trellis", mixer_kwargs=tiny_mixer_kwargs("trellis", 4), attn_layers=[1], attn_window=3)
    model = SlotMemForCausalLM(config).eval()
    assert [b.mixer_name for b in model.model.layers] == ["trellis", "attention", "trellis"]
    assert model.model.layers[1].mixer.window_size == 3
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back) is SlotMemForCausalLM and type(back.model) is SlotMemModel
    ids = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


def test_state_size_per_layer_and_total():
    model = tiny_model("lattice")  # H=2, m=8, d=16
    assert model.layer_state_sizes(100) == [2 * 8 * 16] * LAYERS
    assert model.state_size(10) == model.state_size(10_000) == LAYERS * 2 * 8 * 16
    trellis = tiny_model("trellis")  # H * m * (dk + dv)
    assert trellis.layer_state_sizes() == [2 * 8 * 32] * LAYERS
    hybrid = tiny_model("lattice", attn_layers=[1])
    sizes = hybrid.layer_state_sizes(100)
    assert sizes[0] == 2 * 8 * 16 and sizes[1] == 2 * HIDDEN * 100  # K and V of 100 tokens
    assert hybrid.state_size(200) > hybrid.state_size(100)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("family", ["lattice", "trellis"])
def test_generate_greedy_with_cache_equals_without_cache(family):
    model = tiny_model(family, chunk_size=1)
    ids = torch.randint(0, VOCAB, (1, 4))
    seq_c, logits_c, out = greedy(model, ids, 6)
    seq_n, logits_n, _ = greedy(model, ids, 6, use_cache=False)
    assert isinstance(cache_of(out), RecurrentCache)
    assert torch.equal(seq_c, seq_n)
    assert max_err(logits_c, logits_n) < 1e-4


@pytest.mark.parametrize("family", ["lattice", "trellis"])
def test_generate_cache_memory_does_not_grow(family):
    model = tiny_model(family, chunk_size=4)
    ids = torch.randint(0, VOCAB, (2, 5))
    short = cache_of(greedy(model, ids, 2)[2])
    long = cache_of(greedy(model, ids, 24)[2])
    assert short.get_seq_length() == 6 and long.get_seq_length() == 28
    assert short.nbytes() == long.nbytes() > 0
    assert short.layer_nbytes() == long.layer_nbytes()


@pytest.mark.parametrize("mixer", ["lattice", "trellis", "attention"])
def test_batched_left_padded_generate_equals_single_sequence(mixer):
    model = tiny_model(mixer, chunk_size=2)
    rows = [torch.randint(1, VOCAB, (n,)) for n in (6, 2, 4)]
    ids, mask = left_pad(rows)
    seq_b, logits_b, _ = greedy(model, ids, 5, attention_mask=mask)
    for i, r in enumerate(rows):
        seq_1, logits_1, _ = greedy(model, r[None], 5)
        assert torch.equal(seq_b[i, ids.shape[1] - len(r):], seq_1[0])
        assert max_err(logits_b[i], logits_1[0]) < 1e-4


def test_chunked_prefill_and_inputs_embeds_generate_like_plain_generate():
    model = tiny_model("lattice", chunk_size=1)
    ids = torch.randint(0, VOCAB, (2, 11))
    seq, logits, _ = greedy(model, ids, 4)
    seq_c, logits_c, out = greedy(model, ids, 4, prefill_chunk_size=4)  # transformers feeds 4 + 4 + 3 tokens
    assert torch.equal(seq, seq_c) and max_err(logits, logits_c) < 1e-5
    assert cache_of(out).get_seq_length() == 14
    seq_e, logits_e, _ = greedy(model, None, 4, inputs_embeds=model.get_input_embeddings()(ids))
    assert torch.equal(seq_e, seq[:, 11:]) and max_err(logits, logits_e) < 1e-5


def test_sampling_is_seeded_and_respects_top_k():
    model = tiny_model("lattice", chunk_size=4)
    ids = torch.randint(0, VOCAB, (2, 4))
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(model.generate(ids, max_new_tokens=12, do_sample=True, top_k=3, temperature=0.7, pad_token_id=0))
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 16)
    out = model.generate(ids, max_new_tokens=6, do_sample=True, top_k=1, pad_token_id=0)  # top-1 == greedy
    assert torch.equal(out, model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0))


def test_beam_search_reorders_the_recurrent_cache():
    model = tiny_model("lattice", chunk_size=1)
    ids = torch.randint(0, VOCAB, (2, 5))
    beams = model.generate(ids, max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0)
    no_cache = model.generate(ids, max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(beams, no_cache)


def test_generation_refuses_foreign_caches_and_rollback():
    model = tiny_model("lattice")
    ids = torch.randint(0, VOCAB, (1, 4))
    with pytest.raises(TypeError, match="RecurrentCache"):
        model(ids, past_key_values=DynamicCache(), use_cache=True)
    with pytest.raises(ValueError, match="cache_implementation"):
        model.generate(ids, max_new_tokens=2, cache_implementation="static", pad_token_id=0)
    cache = RecurrentCache()
    model.generate(ids, max_new_tokens=3, pad_token_id=0, **{CACHE_NAME: cache})
    assert cache.get_seq_length() == 6  # a user cache is filled in place
    with pytest.raises(NotImplementedError):
        cache.crop(2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model(ids, foo=1)
    with pytest.raises(ValueError, match="no tokens and there is no cached state"):
        model.generate(ids[:, :0], max_new_tokens=2, pad_token_id=0)  # an empty prompt


def test_forward_takes_the_cache_under_each_transformers_name():
    """transformers 5.2x renamed the generation cache ``cache`` (``past_key_values`` / ``cache_params``
    deprecated); forward takes any one of the three and returns it under the installed name."""
    model = tiny_model("lattice").eval()
    ids = torch.randint(0, VOCAB, (2, 6))
    whole = model(ids).logits
    for name in ("cache", "past_key_values", "cache_params"):
        cache = cache_of(model(ids[:, :4], use_cache=True))
        out = model(ids[:, 4:], use_cache=True, **{name: cache})
        assert cache_of(out) is cache and cache.get_seq_length() == 6
        assert max_err(out.logits, whole[:, 4:]) < 1e-5
    with pytest.raises(ValueError, match="several names"):
        model(ids, cache=RecurrentCache(), past_key_values=RecurrentCache())


# --------------------------------------------------------------------------- chunk form vs exact decode


@pytest.mark.parametrize("family", ["lattice", "trellis"])
def test_chunked_prefill_and_decode_reproduce_the_chunk_forward(family):
    """Training runs the chunk-parallel form (inner gradients stale within a chunk). The decode cache
    carries the chunk grid (state, chunk anchor, offset), so a prefill of any length followed by
    token-by-token decoding equals the full forward, also for a left-padded row whose chunk offsets
    differ from its neighbour's."""
    C, P, T = 8, 5, 30
    model = tiny_model(family, chunk_size=C).double()
    ids = torch.randint(1, VOCAB, (2, T))
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        out = model(ids[:, :P], attention_mask=mask[:, :P], use_cache=True)
        cache, steps = cache_of(out), [out.logits]
        for t in range(P, T):
            steps.append(model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], **{CACHE_NAME: cache}, use_cache=True).logits)
    dec = torch.cat(steps, 1)
    valid = mask.bool()
    assert max_err(full[valid], dec[valid]) < 1e-8


# --------------------------------------------------------------------------- training details


def test_packed_sequences_match_separate_runs_and_loss_does_not_cross_boundaries():
    model = tiny_model("lattice", chunk_size=2)
    a, b = torch.randint(0, VOCAB, (1, 5)), torch.randint(0, VOCAB, (1, 4))
    packed = torch.cat([a, b], 1)
    cu = torch.tensor([0, 5, 9])
    with torch.no_grad():
        out = model(packed, cu_seqlens=cu, labels=packed)
        la, lb = model(a, labels=a), model(b, labels=b)
    assert max_err(out.logits[:, :5], la.logits) < 1e-5 and max_err(out.logits[:, 5:], lb.logits) < 1e-5
    expected = (la.loss * 4 + lb.loss * 3) / 7  # 4 + 3 predicted tokens, none across the boundary
    assert abs(out.loss.item() - expected.item()) < 1e-5


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model("lattice", chunk_size=4).train()
    ids = torch.randint(0, VOCAB, (2, 8))
    model(ids, labels=ids).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model(ids, labels=ids).loss.backward()
    assert all(max_err(p.grad, ref[n]) < 1e-6 for n, p in model.named_parameters())


def test_hidden_states_and_logits_to_keep():
    model = tiny_model("lattice")
    ids = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        last = model(ids, logits_to_keep=1).logits
    assert len(out.hidden_states) == LAYERS + 1
    assert max_err(last, out.logits[:, -1:]) < 1e-6
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


# --------------------------------------------------------------------------- CLI


def test_cli_info_yaml_and_json(tmp_path, capsys):
    cli_main(["info", "--config", str(CONFIG_DIR / "lattice-tiny.yaml"), "--context-lengths", "1024", "65536"])
    text = capsys.readouterr().out
    assert "LatticeForCausalLM" in text and "constant in context length" in text
    assert "16,384" in text  # 4 layers x 4 heads x 32 slots x 32 dims
    (tmp_path / "t.json").write_text(json.dumps({"mixer": "attention", "hidden_size": 64, "num_heads": 2,
                                                 "num_hidden_layers": 2, "attn_window": 8}))
    cli_main(["info", "--config", str(tmp_path / "t.json"), "--context-lengths", "4", "100"])
    text = capsys.readouterr().out
    assert "SlotMemForCausalLM" in text and "attention x2" in text
    (tmp_path / "bad.yaml").write_text("mixer: lattice\nhiden_size: 3\n")
    with pytest.raises(SystemExit) as exit_info:  # a user error: one line, exit 2
        cli_main(["info", "--config", str(tmp_path / "bad.yaml")])
    assert exit_info.value.code == 2 and "unknown config key(s) ['hiden_size']" in capsys.readouterr().err


def test_cli_info_on_a_training_config_describes_the_trained_model(tmp_path, capsys):
    """``slotmem info`` on a training config shows the model the trainer builds: the model section with the
    task's vocabulary (MQAR: mqar.vocab_size), not the schema's default vocabulary."""
    from slotmem.train.config import load_config, model_config
    from slotmem.train.tasks import build_task

    path = tmp_path / "run.yaml"
    path.write_text("task: mqar\nmodel: {mixer: trellis, hidden_size: 32, num_heads: 2, mixer_kwargs: {num_slots: 8}}\n"
                    "mqar: {vocab_size: 96, train: [{seq_len: 16, num_kv_pairs: 2, num_examples: 8}], "
                    "test: [{seq_len: 16, num_kv_pairs: 2, num_examples: 4}]}\n")
    cli_main(["info", "--config", str(path)])
    text = capsys.readouterr().out
    assert "TrellisForCausalLM" in text and "vocab 96" in text
    trained = build_task(load_config(path)).build_net().config
    assert model_config(load_config(path).model, 96).to_dict() == trained.to_dict()


@pytest.mark.parametrize("config_file", ["lattice-tiny", "trellis-tiny", "transformer-tiny"])
def test_example_configs_load(config_file):
    config = load_config_file(CONFIG_DIR / f"{config_file}.yaml")
    assert config.vocab_size == 259 and config.eos_token_id == 257


def test_cli_generate_streams_with_byte_tokenizer(tmp_path, capsys):
    from slotmem.data.text import byte_tokenizer

    tok = byte_tokenizer()
    config = LatticeConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_heads=2,
                           mixer_kwargs={"num_slots": 8, "chunk_size": 4}, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    LatticeForCausalLM(config).save_pretrained(tmp_path / "no_tok")  # no tokenizer: byte fallback
    cli_main(["generate", "--model", str(tmp_path / "no_tok"), "--prompt", "hello", "--max-new-tokens", "6",
              "--temperature", "0", "--ignore-eos"])
    captured = capsys.readouterr()
    assert captured.out.startswith("hello") and "6 new tokens" in captured.err
    LatticeForCausalLM(config).save_pretrained(tmp_path / "with_tok")
    tok.save_pretrained(tmp_path / "with_tok")
    args = ["generate", "--model", str(tmp_path / "with_tok"), "--prompt", "hi", "--max-new-tokens", "5",
            "--temperature", "0.8", "--top-k", "5", "--seed", "3", "--ignore-eos"]
    cli_main(args)
    first = capsys.readouterr().out
    cli_main(args)
    assert capsys.readouterr().out == first and first.startswith("hi")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["generate", "--model", str(tmp_path), "--prompt", "x"])
    assert exit_info.value.code == 2 and "not a saved model" in capsys.readouterr().err


# --------------------------------------------------------------------------- README


def test_readme_snippet(tmp_path, monkeypatch):
    """Runs the README's model snippet verbatim (the python block after the 'tested by' marker)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    marker = "<!-- tested by tests/test_models.py::test_readme_snippet -->"
    assert marker in readme
    block = readme.split(marker, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    model, loss, out, LatticeForCausalLM = scope["model"], scope["loss"], scope["out"], scope["LatticeForCausalLM"]
    assert type(model) is LatticeForCausalLM and torch.isfinite(loss)
    assert out.shape[0] == 1 and 5 < out.shape[1] <= 25


def test_trellis_slot_code_decorrelation_is_added_to_the_training_loss_only():
    """The causal-LM loss and the trainer's objective add each layer's weighted slot-code overlap in
    training mode (the objective as a per-target mean times the target count); eval losses are plain CE."""
    from slotmem.eval.objectives import ForecastObjective, TokenObjective
    from slotmem.layers.trellis import slot_code_overlap
    from slotmem.models.forecasting import ForecastModel

    torch.manual_seed(0)
    kw = dict(tiny_mixer_kwargs("trellis", 4), slot_code_decorrelation=2.0)
    model = model_for_causal_lm(tiny_config("trellis", 4, mixer_kwargs=kw)).double()
    codes = []
    for layer in model.modules():
        if hasattr(layer, "alpha_proj"):
            layer.alpha_proj.register_forward_hook(lambda m, i, o: codes.append(o))
    ids = torch.randint(0, VOCAB, (2, 12))
    ce = model.eval()(ids, labels=ids).loss
    codes.clear()
    loss = model.train()(ids, labels=ids).loss
    aux = sum(2.0 * slot_code_overlap(c.reshape(2, 12, HEADS, -1)) for c in codes)
    assert len(codes) == LAYERS and (loss - ce - aux).abs() < 1e-10 and aux > 0
    # packed (cu_seqlens) under num_items_in_batch: the share counts the targets the CE counts (22 of the
    # 23 shifted labels: the first sequence's last token predicts nothing)
    packed, cu = ids.reshape(1, 24), torch.tensor([0, 12, 24])
    ce = model.eval()(packed, labels=packed, cu_seqlens=cu, num_items_in_batch=40).loss
    codes.clear()
    loss = model.train()(packed, labels=packed, cu_seqlens=cu, num_items_in_batch=40).loss
    aux = sum(2.0 * slot_code_overlap(c.reshape(1, 24, HEADS, -1), cu_seqlens=cu) for c in codes)
    assert (loss - ce - aux * 22 / 40).abs() < 1e-6  # the CE is float32 (23 / 40 would be off by 1.7e-2)
    labels = ids.clone()
    labels[:, :6] = -100
    objective = TokenObjective(model)
    plain = objective.eval()(ids, labels)["loss_sum"]
    out = objective.train()(ids, labels)
    assert (out["loss_sum"] - plain - aux * out["count"]).abs() < 1e-9
    forecast = ForecastObjective(ForecastModel(model.model, HIDDEN, 2, 2, lookback=12, horizon=3)).double()
    x, y = torch.randn(2, 12, 2, dtype=torch.float64), torch.randn(2, 3, 2, dtype=torch.float64)
    plain = forecast.eval()(x, y)["loss_sum"]
    codes.clear()
    out = forecast.train()(x, y)
    aux = sum(2.0 * slot_code_overlap(c.reshape(2, 12, HEADS, -1)) for c in codes)
    assert len(codes) == LAYERS and out["count"] == 12 and (out["loss_sum"] - plain - aux * 12).abs() < 1e-9
