"""Fault injection: damaged checkpoints, concurrent runs, a kill during a save, disk full,
read-only output. Tiny MQAR runs (width 16, T=16, a few steps) in tmp folders."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from slotmem.models import manifest
from slotmem.train import checkpoint as ckpt
from slotmem.train.config import load_config
from slotmem.train.errors import CorruptCheckpointError, OutputError, RunLockedError
from slotmem.train.metrics import read_metrics
from slotmem.train.runlock import RunLock
from slotmem.train.trainer import Trainer, train

TINY = [
    "task=mqar", "model.mixer=lattice", "model.hidden_size=16", "model.num_heads=1", "model.use_mlp=false",
    "model.num_hidden_layers=1", "model.mixer_kwargs={num_slots: 8, chunk_size: 8}", "mqar.vocab_size=64",
    "mqar.train=[{seq_len: 16, num_kv_pairs: 2, num_examples: 32}]",
    "mqar.test=[{seq_len: 16, num_kv_pairs: 2, num_examples: 8}]",
    "optim.lr=1e-2", "train.batch_size=4", "train.steps=8", "train.log_every=2", "train.eval_every=4",
    "train.save_every=2", "train.keep_checkpoints=3", "train.progress=false", "train.tensorboard=false",
]


def cfg(tmp_path, name, *extra):
    return load_config(None, TINY + [f"out_dir={tmp_path / name}", *extra])


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: (results, metrics records)."""
    d = tmp_path_factory.mktemp("ref")
    res = train(cfg(d, "full"), quiet=True)
    return res, _strip(read_metrics(d / "full" / "metrics.jsonl"))


def _flip(path, n=64):
    b = bytearray(path.read_bytes())
    m = len(b) // 2
    for i in range(m, m + n):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


# --------------------------------------------------------------------------- corrupt checkpoints


@pytest.mark.parametrize("damage", ["flip64", "truncate"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, reference, damage):
    train(cfg(tmp_path, "r", "train.stop_at_step=6"), quiet=True)
    newest = ckpt.checkpoint_path(tmp_path / "r", 6)
    if damage == "flip64":
        _flip(newest)
    else:
        newest.write_bytes(newest.read_bytes()[:1000])
    capsys.readouterr()
    res = train(cfg(tmp_path, "r"), quiet=True)
    err = capsys.readouterr().err
    assert "step_00000006.pt' is corrupt: checksum mismatch" in err
    assert "resuming from the previous checkpoint step_00000004.pt" in err
    assert (tmp_path / "r" / "checkpoints" / "step_00000006.pt.corrupt").is_file()  # kept for inspection
    assert res["final"] == reference[0]["final"]  # resumed at 4: the same run, bit for bit
    assert _strip(read_metrics(tmp_path / "r" / "metrics.jsonl")) == reference[1]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "r")] == [4, 6, 8]  # 6 rewritten by the resumed run


def test_every_checkpoint_corrupt_stops_and_moves_nothing(tmp_path):
    train(cfg(tmp_path, "r", "train.stop_at_step=4"), quiet=True)
    for _, p in ckpt.list_checkpoints(tmp_path / "r"):
        _flip(p)
    with pytest.raises(CorruptCheckpointError, match=r"no valid checkpoint .*step_00000004.pt' is corrupt: checksum "
                                                     r"mismatch.*step_00000002.pt' is corrupt: checksum mismatch"):
        Trainer(cfg(tmp_path, "r"), quiet=True)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "r")] == [2, 4]


def test_explicit_resume_from_a_corrupt_file_is_an_error(tmp_path):
    train(cfg(tmp_path, "r", "train.stop_at_step=4"), quiet=True)
    p = ckpt.checkpoint_path(tmp_path / "r", 4)
    _flip(p)
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
        Trainer(cfg(tmp_path, "r", f"train.resume={p}"), quiet=True)


def test_damaged_checksum_file(tmp_path):
    train(cfg(tmp_path, "r", "train.stop_at_step=2"), quiet=True)
    ckpt.checksum_path(ckpt.checkpoint_path(tmp_path / "r", 2)).write_text("garbage\n")
    with pytest.raises(CorruptCheckpointError, match=r"checksum file step_00000002.pt.sha256 is damaged"):
        ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "r", 2))


def test_checksum_file_is_sha256sum_format(tmp_path):
    train(cfg(tmp_path, "r", "train.stop_at_step=2"), quiet=True)
    p = ckpt.checkpoint_path(tmp_path / "r", 2)
    digest, name = ckpt.checksum_path(p).read_text().split()
    assert name == p.name and digest == ckpt.file_sha256(p)


def test_prune_never_deletes_the_protected_checkpoint(tmp_path):
    train(cfg(tmp_path, "r", "train.stop_at_step=6"), quiet=True)
    newest = ckpt.checkpoint_path(tmp_path / "r", 6)
    oldest = ckpt.checkpoint_path(tmp_path / "r", 2)
    gone = ckpt.prune_checkpoints(tmp_path / "r", keep=1, protect=oldest)
    assert oldest not in gone and newest.is_file() and oldest.is_file()
    assert not ckpt.checksum_path(ckpt.checkpoint_path(tmp_path / "r", 4)).exists()  # checksum pruned with it


def test_exported_model_manifest_is_checked(tmp_path):
    from transformers import AutoModelForCausalLM

    from slotmem.models.manifest import CorruptModelError
    from slotmem.train.errors import ConfigError

    train(cfg(tmp_path, "r", "train.steps=2"), quiet=True)
    model = tmp_path / "r" / "model"
    assert manifest.verify_manifest(model) is True
    weights = next(p for p in model.iterdir() if p.suffix == ".safetensors")
    _flip(weights, 16)
    with pytest.raises(CorruptModelError, match=rf"{weights.name} is corrupt \(checksum mismatch"):
        Trainer(cfg(tmp_path, "ft", f"model.pretrained={model}"), quiet=True)
    with pytest.raises(CorruptModelError, match=rf"{weights.name} is corrupt \(checksum mismatch"):
        AutoModelForCausalLM.from_pretrained(model)  # every load of a saved model checks its manifest
    (model / manifest.MANIFEST).unlink()  # no manifest: nothing to check (a model saved elsewhere)
    assert manifest.verify_manifest(model) is False
    with pytest.raises(ConfigError, match="is not a saved model directory"):
        Trainer(cfg(tmp_path, "ft2", f"model.pretrained={tmp_path / 'r'}"), quiet=True)


# --------------------------------------------------------------------------- lock

_HOLD = textwrap.dedent("""
    import sys, time
    from slotmem.train.runlock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _holder(out_dir):
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out_dir)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert p.stdout.readline().strip() == "locked"
    return p


def test_concurrent_run_is_refused_at_once_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "r"
    p = _holder(out)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunLockedError, match=rf"out_dir '.*r' is in use by another slotmem run \(pid {p.pid}, running since"):
            Trainer(cfg(tmp_path, "r"), quiet=True)
        assert time.perf_counter() - t0 < 30  # before data and model are built (generous: a shared CI machine)
        assert not (out / "checkpoints").exists()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    capsys.readouterr()
    tr = Trainer(cfg(tmp_path, "r"), quiet=True)  # the killed holder's lock is free: taken over, with a notice
    try:
        assert f"taking over the stale lock of {out} left by pid {p.pid} (no longer running)" in capsys.readouterr().err
        assert json.loads((out / ".slotmem.lock").read_text())["pid"] == os.getpid()
    finally:
        tr.close()
    assert (out / ".slotmem.lock").read_text() == ""  # released cleanly: no stale record


def test_second_trainer_in_the_same_process_is_refused(tmp_path):
    tr = Trainer(cfg(tmp_path, "r"), quiet=True)
    try:
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
            Trainer(cfg(tmp_path, "r"), quiet=True)
    finally:
        tr.close()
    Trainer(cfg(tmp_path, "r"), quiet=True).close()


# --------------------------------------------------------------------------- kill during a save

_KILL_ON_SECOND_SAVE = textwrap.dedent("""
    import os, signal, sys
    from slotmem.train import checkpoint as ckpt
    from slotmem.train.config import load_config
    from slotmem.train.trainer import train
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith("step_00000004.pt"):  # checksum file in place, payload still a temp file
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    ckpt.os.replace = replace
    train(load_config(None, sys.argv[2:] + ["out_dir=" + sys.argv[1]]), quiet=True)
""")


def test_kill_during_save_then_resume_is_exact(tmp_path, reference):
    out = tmp_path / "k"
    p = subprocess.run([sys.executable, "-c", _KILL_ON_SECOND_SAVE, str(out), *TINY], env=os.environ.copy(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = sorted(x.name for x in (out / "checkpoints").iterdir())
    assert any(".tmp-" in n for n in left) and "step_00000004.pt.sha256" in left and "step_00000004.pt" not in left
    res = train(cfg(tmp_path, "k"), quiet=True)
    names = sorted(x.name for x in (out / "checkpoints").iterdir())
    assert not any(".tmp-" in n for n in names)  # stale temp files removed at start
    assert res["final"] == reference[0]["final"]
    assert _strip(read_metrics(out / "metrics.jsonl")) == reference[1]


# --------------------------------------------------------------------------- disk full / read-only


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    tr = Trainer(cfg(tmp_path, "full"), quiet=True)
    try:
        tr.step = 2
        good = tr.save()
        before = good.read_bytes()
        real = torch.save

        def full_disk(obj, f):
            real(obj, f)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ckpt.torch, "save", full_disk)
        tr.step = 4
        with pytest.raises(OutputError, match=r"cannot write checkpoint '.*step_00000004.pt': no space left on device "
                                              r"\[ENOSPC\]. The previous checkpoints are kept. Fix: free disk space"):
            tr.save()
    finally:
        tr.close()
    names = sorted(x.name for x in (tmp_path / "full" / "checkpoints").iterdir())
    assert names == ["step_00000002.pt", "step_00000002.pt.sha256"]
    assert good.read_bytes() == before and ckpt.verify_checksum(good)


def test_disk_full_through_the_cli_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    from slotmem.cli import main

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_tmp", full_disk)
    monkeypatch.delenv("SLOTMEM_DEBUG", raising=False)
    (tmp_path / "c.yaml").write_text("task: mqar\n")
    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "c.yaml"), *TINY, f"out_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert "error: cannot write" in err and "no space left on device [ENOSPC]" in err and "Traceback" not in err


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "the file system is read-only"), (errno.EACCES, "permission denied")])
def test_read_only_output_folder_is_reported_at_start(tmp_path, monkeypatch, code, reason):
    import slotmem.train.runlock as runlock

    class ReadOnlyOS:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def open(*a, **k):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runlock, "os", ReadOnlyOS())
    with pytest.raises(OutputError, match=rf"cannot write the run lock in out_dir '.*\.slotmem\.lock': {reason}"):
        Trainer(cfg(tmp_path, "ro"), quiet=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder_for_real(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            Trainer(cfg(tmp_path, "ro"), quiet=True)
    finally:
        out.chmod(0o700)


def test_metrics_write_failure_is_reported(tmp_path, monkeypatch):
    from slotmem.train.metrics import MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=False)

    class Full:
        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

        flush = close = lambda self: None

    log._f = Full()
    with pytest.raises(OutputError, match=r"cannot write metrics log '.*metrics.jsonl': no space left on device"):
        log.log(1, "train", {"loss": 1.0})


# --------------------------------------------------------------------------- logs


def test_rerunning_a_finished_run_duplicates_no_record(tmp_path):
    train(cfg(tmp_path, "r"), quiet=True)
    first = _strip(read_metrics(tmp_path / "r" / "metrics.jsonl"))
    (tmp_path / "r" / "metrics.jsonl.tmp-999999").write_text("left by a killed writer")
    (tmp_path / "r" / "results.json.tmp-999999").write_text("{")
    train(cfg(tmp_path, "r"), quiet=True)  # resumes at the last step: evaluates again
    again = _strip(read_metrics(tmp_path / "r" / "metrics.jsonl"))
    assert again == first
    assert sum(r["split"] == "final" for r in again) == 1
    assert not list((tmp_path / "r").glob("*.tmp-*"))


def test_metrics_cut_line_is_skipped_on_resume(tmp_path, reference):
    train(cfg(tmp_path, "r", "train.stop_at_step=4"), quiet=True)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "split": "tra')  # a crash mid-line after the checkpoint
    res = train(cfg(tmp_path, "r"), quiet=True)
    assert res["final"] == reference[0]["final"]
    assert _strip(read_metrics(tmp_path / "r" / "metrics.jsonl")) == reference[1]


def test_compare_workers_stop_when_the_comparison_process_is_killed(tmp_path):
    """A killed `slotmem compare` leaves no worker training on as an orphan (it would hold its run's
    lock and the cores): the worker pool's initializer makes each worker exit with its parent."""
    script = textwrap.dedent(f"""
        import os, sys, time
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from slotmem.compare.runner import _init_worker
        if __name__ == "__main__":
            ex = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                     initargs=(1, os.getpid()))
            print(ex.submit(os.getpid).result(), flush=True)   # the worker is up (its initializer ran)
            ex.submit(time.sleep, 600)
            time.sleep(600)
    """)
    p = tmp_path / "pool.py"
    p.write_text(script)
    parent = subprocess.Popen([sys.executable, str(p)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: no cleanup in the parent at all
        parent.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its killed parent by 20 s")
    finally:
        parent.kill()
