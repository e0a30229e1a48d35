import os
import sys

import torch

# Triton kernels run through the interpreter on CPU tensors when there is no GPU. The variable must
# be set before anything imports triton (deepspeed and transformers do), so it is set here, first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# As in an activated venv (and in launch/slurm/train.sbatch): the venv's tools first on PATH. DeepSpeed's
# CPU allreduce op is compiled once through ninja; two ninja versions (the venv's and the system's) do not
# read each other's build log, and every switch between them recompiles it (~30 s).
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# The suite runs a few fixed examples per property (the same ones every run); HYPOTHESIS_PROFILE=deep
# runs many fresh ones, for a fuzzing session.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("deep", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the benchmarks under tests/benchmarks (skipped otherwise)")


# What a test uses -> the marker it must carry, so that `make test-fast` never starts a run by accident.
NEEDS_MARKER = {"reference_run": "integration", "gpu_check_dry_run": "integration", "slurm_cluster": "cluster"}


def pytest_collection_modifyitems(config, items):
    unmarked = [f"{item.nodeid} (uses {fixture}: mark it {marker})" for item in items
                for fixture, marker in NEEDS_MARKER.items()
                if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker)]
    unmarked += [f"{item.nodeid} (mark it benchmark)" for item in items
                 if "tests/benchmarks/" in item.nodeid and not item.get_closest_marker("benchmark")]
    if unmarked:
        raise pytest.UsageError("tests missing their tier marker:\n" + "\n".join(unmarked))
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark`")
    for item in items:
        if item.get_closest_marker("benchmark"):
            item.add_marker(skip)


# ---- the GPU check's dry rehearsal, started in the background once the selection needs it -----
DRY_RUN = pytest.StashKey()


def pytest_collection_finish(session):
    if not session.config.option.collectonly and any("gpu_check_dry_run" in getattr(item, "fixturenames", ())
                                                     for item in session.items):
        from tests.gpu_check_dry import DryRun

        session.config.stash[DRY_RUN] = DryRun()


def pytest_sessionfinish(session):
    if DRY_RUN in session.config.stash:
        session.config.stash[DRY_RUN].stop()


@pytest.fixture(scope="session")
def gpu_check_dry_run(request):
    """(process, folder, summary.json) of `scripts/gpu_check.sh --dry` on a small demo: one rehearsal
    per session, started at collection (tests/gpu_check_dry.py)."""
    return request.config.stash[DRY_RUN].result()


@pytest.fixture(autouse=True)
def _remove_shm_left_by_killed_ranks(request):
    """A rank killed before the end of its process-group setup leaves DeepSpeed's CPU allreduce
    segment (~70 MB of RAM) in /dev/shm; remove the ones a test's runs left, so that a long suite
    of fault tests cannot fill the machine's memory. (Runs that get through setup remove their own:
    tests/faults/test_shared_memory.py checks that.) Only tests that start ranks can leave one, and an
    in-process test must not touch the segments of ranks that another pytest is starting."""
    from higgs_ds.train.distributed import SHM_DIR

    if not request.node.get_closest_marker("integration") and not request.node.get_closest_marker("cluster"):
        yield
        return
    before = set(SHM_DIR.glob("deepspeed_allreduce_buffer_*"))
    yield
    for segment in set(SHM_DIR.glob("deepspeed_allreduce_buffer_*")) - before:
        segment.unlink(missing_ok=True)


# ---- data built once per session, shared by every directory -----------------------------------
@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for the module: the speaker LSTM, the ONNX metric models and tiny Demucs run many times
    slower with 2 threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The demo tokenizer (byte-level BPE, 800 ids, every Higgs special token), trained once."""
    from higgs_ds.data.demo import demo_sentences
    from higgs_ds.data.demo_tokenizer import train_demo_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_demo_tokenizer(demo_sentences(), out, vocab_size=800)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def random_data(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    """Random-code train/eval splits and the tokenizer: nothing in them is predictable but structure."""
    from tests.data.synthetic import write_synthetic_split

    root = tmp_path_factory.mktemp("random_data")
    write_synthetic_split(root / "train", num_shards=8, per_shard=24, seed=0)
    write_synthetic_split(root / "eval", num_shards=2, per_shard=6, seed=1)
    return {"train": root / "train", "eval": root / "eval", "tokenizer": tokenizer_dir}


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, random_data) -> Path:
    """One uninterrupted 2-rank ZeRO-3 run on `random_data` (10 steps, saves at 2, 4, ..., 10, two kept),
    through `deepspeed` itself as the README runs it: every resumed, crashed or re-run training of the same
    settings must reproduce its per-step losses."""
    from tests.harness import RESUME_STEPS, checked, train

    run = tmp_path_factory.mktemp("reference") / "run"
    checked(train(run, random_data, *RESUME_STEPS, launcher="deepspeed"))
    return run
