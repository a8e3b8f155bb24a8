"""``resnetlab bench infer`` runs at a tiny size and prints one valid JSON line (not timed)."""

from __future__ import annotations

import json

import pytest

from resnetlab.cli import main


def test_bench_infer_tiny_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "infer", "--model", "resnet20", "--image-size", "8", "--batch-size", "1", "2"]
    # one thread: the test checks the report, not speed (and stays fast on a shared machine)
    argv += ["--seconds", "0.03", "--threads", "1", "--skip", "folded_cl_compile", "--json"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["model"] == "resnet20" and report["image_size"] == 8
    assert [r["batch_size"] for r in report["results"]] == [1, 2]
    for res in report["results"]:
        names = [p["name"] for p in res["paths"]]
        assert names == ["eager_nchw", "folded_cl", "onnxruntime"]
        assert res["all_equal"] and res["best"] in names and res["speedup"] > 0
        for p in res["paths"]:
            assert p["max_abs_diff"] <= 1e-4 and p["latency_ms"] > 0 and p["throughput_ips"] > 0


@pytest.mark.slow
def test_bench_infer_with_compile(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "infer", "--model", "resnet20", "--image-size", "8", "--batch-size", "2"]
    argv += ["--seconds", "0.05", "--threads", "1", "--skip", "onnxruntime", "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert "folded_cl_compile" in [p["name"] for p in res["paths"]] and res["all_equal"]
