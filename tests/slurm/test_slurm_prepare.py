"""launch/slurm/prepare.sbatch on the local two-node Slurm cluster: a 2-task job array builds the two parts
of a manifest with the demo codec, a dependent job merges them, and the result equals a single build."""

from __future__ import annotations

import sys

import pytest

from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo import shipped_demo_codec
from higgs_ds.data.shards import load_index
from tests.data.test_parts_merge import index_counts, split_contents, write_audio_manifest
from tests.slurm.cluster import REPO, sh, tail, wait_for_end

pytestmark = pytest.mark.cluster

SBATCH = REPO / "launch" / "slurm" / "prepare.sbatch"


def test_job_array_parts_merged_equal_a_single_build(slurm_cluster, tmp_path):
    manifest, codec = write_audio_manifest(tmp_path / "corpus"), shipped_demo_codec()
    settings = ["--codec-path", str(codec), "--codec-device", "cpu", "--skip-bad",
                "--max-samples-per-shard", "2"]
    single = build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / "single"), skip_bad=True,
                                      codec=CodecConfig(path=str(codec), device="cpu"),
                                      max_samples_per_shard=2, progress=False))
    env = {**slurm_cluster, "HIGGS_DS_ROOT": str(REPO), "VENV": sys.prefix, "OMP_NUM_THREADS": "1"}
    out, logs = tmp_path / "train", tmp_path / "logs"
    logs.mkdir()
    array = sh(env, "sbatch", "--parsable", "--array=0-1", "--time=10", f"--output={logs}/part-%a.log",
               str(SBATCH), "--manifest", str(manifest), "--out", str(out), *settings).strip()
    merge = sh(env, "sbatch", "--parsable", f"--dependency=afterok:{array}", "--time=10",
               f"--output={logs}/merge.log", str(SBATCH), "--merge", "--out", str(out)).strip()
    info = wait_for_end(env, merge, logs / "merge.log", timeout=300)
    every_log = "\n".join(f"--- {log.name}\n{tail(log)}" for log in sorted(logs.glob("*.log")))
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), every_log
    assert sorted(p.name for p in (tmp_path / "train.parts").iterdir()) == ["0", "1"]
    for part in (0, 1):
        assert f"part {part}/2 of job {array}" in (logs / f"part-{part}.log").read_text(), every_log

    assert split_contents(out) == split_contents(tmp_path / "single")  # same ids, same order, same codes
    assert index_counts(load_index(out)) == index_counts(single)
    assert single["rejects"] == 1 and single["num_samples"] == 6
