"""Every shipped config resolves to the same model as recorded in
``tests/data/shipped_model_configs.json`` (first recorded before the issue-13 refactor, re-recorded
on each deliberate change): the effective ``SlotMemConfig`` of each training config, each
comparison run (default preset) and each model config file. Moving a default or renaming a key must not change what they build.

A deliberate change regenerates it: ``SLOTMEM_REGEN_MODEL_CONFIGS=1 python -m pytest tests/test_model_resolution.py``.
Configs added after the recording are not in the fixture and are not compared.
"""
import json
import os
from pathlib import Path

import pytest

from slotmem.configs import builtin_names, builtin_path
from slotmem.compare.runner import load_compare_config
from slotmem.models.configuration_slotmem import load_config_file
from slotmem.train.config import load_config
from slotmem.train.config import model_config
from slotmem.train.tasks import task_vocabulary

FIXTURE = Path(__file__).parent / "data" / "shipped_model_configs.json"
_VOLATILE = ("transformers_version",)


def _effective(cfg) -> dict:
    model = model_config(cfg.model, task_vocabulary(cfg)[0]).to_dict()
    return {k: v for k, v in sorted(model.items()) if k not in _VOLATILE}


def resolved() -> dict:
    out = {}
    for name in builtin_names():
        path = builtin_path(name)
        if name.startswith("models/"):
            d = load_config_file(path).to_dict()
            out[name] = {k: v for k, v in sorted(d.items()) if k not in _VOLATILE}
        elif "compare" in name or name.startswith("ablations/"):
            for u in load_compare_config(path).units:
                out[f"{name}:{u.name}"] = _effective(u.cfg)
        else:
            out[name] = _effective(load_config(str(path)))
    return out


def test_shipped_configs_build_the_recorded_models():
    got = json.loads(json.dumps(resolved()))  # the fixture's form (JSON keys are str)
    if os.environ.get("SLOTMEM_REGEN_MODEL_CONFIGS") == "1":
        FIXTURE.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {FIXTURE.name}")
    want = json.loads(FIXTURE.read_text())
    common = sorted(set(got) & set(want))
    assert len(common) >= 10, sorted(got)
    diff = {k: {f: (want[k].get(f), got[k].get(f)) for f in set(want[k]) | set(got[k]) if want[k].get(f) != got[k].get(f)}
            for k in common if got[k] != want[k]}
    assert not diff, diff
