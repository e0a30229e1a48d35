"""`launch/report.py` on run files it cannot read: one `error:` line naming the file (and line), exit 2, no
traceback, and the run's files unchanged."""

import hashlib

import pytest

import launch.report as report_cli
from higgs_ds.errors import run_cli

CASES = {
    # id: (file name, content, what the line names)
    "metrics_not_utf8": ("metrics.jsonl", b'{"step": 1, "kind": "train"}\n\xff\xfe\n{"step": 2, "kind": "train"}\n',
                         ["metrics.jsonl:2", "UTF-8"]),
    "metrics_array_record": ("metrics.jsonl", b'[1, 2]\n{"step": 2, "kind": "train"}\n', ["metrics.jsonl:1", "list"]),
    "metrics_record_without_step": ("metrics.jsonl", b'{"kind": "train"}\n{"step": 2, "kind": "train"}\n',
                                    ["metrics.jsonl:1", "step"]),
    "config_not_json": ("config.json", b"{not json", ["config.json", "not a JSON file"]),
    "config_not_an_object": ("config.json", b"[1]", ["config.json", "not an object"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unreadable_run_file_is_one_error_line(case, tmp_path, capsys):
    name, content, named = CASES[case]
    (tmp_path / name).write_bytes(content)
    before = hashlib.sha256(content).hexdigest()
    assert run_cli(report_cli.main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and all(n in lines[0] for n in named), err
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == before
    assert not (tmp_path / "report.html").exists()


def test_a_half_written_last_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "kind": "train", "loss": 2.0}\n{"step": 2, "ki')
    assert report_cli.main([str(tmp_path)]) == 0 and (tmp_path / "report.html").is_file()
