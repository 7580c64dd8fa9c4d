"""The run scripts of benchmarks/ run end to end with tiny settings on the CPU: the GPU scripts
(the first commands of a session that is lent a GPU, whose device minutes are few) in their smoke
mode (DEVICE=cpu), and the CPU chain of the M1+M2 rows; a first chunk, a resumed chunk, the step
that scores the runs, and the exit status of a failure. Slow (a minute or two each): run with
--run-slow after changing a script, a preset or a flag they use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.slow


def _script(name: str, out: Path, *args: object, data: Path, status: int = 0, **env: str) -> str:
    """Runs benchmarks/NAME OUT ARGS from the repository root on the CPU, expecting exit
    ``status``; its output (and its error output, where it is to fail)."""
    e = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "DGMKIT_DATA": str(data), **env}
    e.pop("OMP_NUM_THREADS", None)  # the scripts set their own
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / name), str(out), *map(str, args)],
        cwd=ROOT,
        env=e,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == status, f"{name} {args}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout if status == 0 else r.stdout + r.stderr


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_moonshot_script_chunks_resume_and_score(tmp_path, data_dir):
    if not (data_dir / "binarized_mnist").is_dir() and not (data_dir / "binarized-mnist").is_dir():
        pytest.skip("the static binarized MNIST files are not in the data folder")
    small = {"EXTRA": "--unet-channels 8 8 --epochs 1 --no-compile", "EVAL_EXTRA": "--limit 32"}
    out = tmp_path / "moon"
    _script("moonshot_gpu.sh", out, 8, data=data_dir, **small)
    _script("moonshot_gpu.sh", out, 5, data=data_dir, **small)  # goes on with --resume
    points = _lines(out / "curve" / "points.jsonl")
    assert len(points) == 2
    first, second = points
    assert (second["epochs"], second["steps_into_next"]) > (first["epochs"], first["steps_into_next"])
    assert second["train_s"] > first["train_s"] > 0
    assert all(p["n"] == 32 and p["nll"] > 0 for p in points)
    assert (out / "curve" / f"{second['name']}.json").is_file()
    _script("moonshot_gpu.sh", out, "orders", 1, data=data_dir, EVAL_EXTRA="--limit 2")
    exact = json.loads((out / "orders-1-seed0.eval.json").read_text())
    assert exact["estimate"] == "order-mixture" and exact["n"] == 2 and exact["nll"] > 0
    curve = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "moonshot_curve.py"), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert curve.returncode == 0, curve.stderr[-3000:]
    assert (out / "curve.png").is_file() and "exact, 1 orders" in curve.stdout

    # carried elsewhere as checked parts (benchmarks/carry.py; its refusals in tests/test_carry.py)
    _script("moonshot_gpu.sh", out, "pack", tmp_path / "parts", data=data_dir)
    assert (tmp_path / "parts" / "carry.json").is_file()
    refused = _script("moonshot_gpu.sh", tmp_path / "nothing", "pack", tmp_path / "p2", data=data_dir, status=1)
    assert "no run in" in refused
    moved = tmp_path / "moved"
    _script("moonshot_gpu.sh", moved, "unpack", tmp_path / "parts", data=data_dir)
    kept = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file() and f.suffix != ".lock")
    assert "run/checkpoint.safetensors" in kept and any(k.startswith("run/orders/") for k in kept)
    assert sorted(str(f.relative_to(moved)) for f in moved.rglob("*") if f.is_file()) == kept
    assert all((moved / name).read_bytes() == (out / name).read_bytes() for name in kept)
    refused = _script("moonshot_gpu.sh", moved, "unpack", tmp_path / "parts", data=data_dir, status=1)
    assert "not an empty folder" in refused
    _script("moonshot_gpu.sh", moved, 5, data=data_dir, **small)  # goes on where the packed run stopped
    assert len(_lines(moved / "curve" / "points.jsonl")) == 3


def test_semisupervised_script_trains_m1_then_m1m2_on_it_and_scores_the_rows(tmp_path, data_dir):
    if not (data_dir / "mnist").is_dir():
        pytest.skip("the MNIST IDX files are not in the data folder")
    out = tmp_path / "ss"
    _script("semisupervised_gpu.sh", out, 25, data=data_dir)  # M1 long enough to have active units
    runs = ("m2-100-s0", "adgm-100-s0", "sdgm-100-s0", "m1")
    assert all((out / r / "config.json").is_file() for r in runs)
    assert not list(out.glob("m1m2-*"))  # M1+M2 waits for M1's first chunk
    _script("semisupervised_gpu.sh", out, 10, data=data_dir)
    assert (out / "m1m2-100-s0" / "config.json").is_file()
    for r in (*runs[:3], "m1m2-100-s0"):
        log = (out / f"{r}.log").read_text()
        assert "run folder:" in log and "Traceback" not in log, log[-2000:]
    assert (out / "m2-100-s0.log").read_text().count("stopped by --time-budget") == 2  # chunk, then resumed chunk
    # another row: M2 and M1+M2 (the 600-label preset) for two labelled subsets, on the same M1
    _script("semisupervised_gpu.sh", out, 5, data=data_dir, LABELS="600", SUBSETS="1 2")
    for s in (1, 2):
        for model in ("m2", "m1m2"):
            config = json.loads((out / f"{model}-600-s{s}" / "config.json").read_text())["config"]
            assert (config["data"]["labels"], config["data"]["labels_seed"]) == (600, s)
    assert json.loads((out / "m1m2-600-s1" / "config.json").read_text())["config"]["model"]["hidden"] == [500]
    assert not list(out.glob("adgm-600-*"))  # the ADGM and SDGM rows are at 100 labels only
    text = _script("semisupervised_gpu.sh", out, "eval", data=data_dir, EVAL_EXTRA="--limit 50")
    assert "m2 at 600 labels:" in text and "over 2 labelled subset(s)" in text
    assert "sdgm at 100 labels:" in text and "m1m2 at 100 labels:" in text
    assert "resuming" not in (out / "m1.log").read_text()  # M1 trained in the first call only
    _script("semisupervised_gpu.sh", out, 5, data=data_dir, LABELS="700", status=1)
    for bad in ("0 x", "0 0"):  # refused before any run starts
        _script("semisupervised_gpu.sh", out, 5, data=data_dir, LABELS="1000", SUBSETS=bad, status=1)
    assert not list(out.glob("*-1000-*"))
    # a training that fails (here: a damaged run folder) fails the script, beside the others
    (out / "sdgm-100-s0" / "config.json").write_text("{")
    _script("semisupervised_gpu.sh", out, 2, data=data_dir, status=1)
    assert (out / "m2-100-s0.log").read_text().count("stopped by --time-budget") == 3


def test_ood_script_trains_both_models_and_scores(tmp_path, data_dir):
    if not (data_dir / "mnist").is_dir():
        pytest.skip("the MNIST IDX files are not in the data folder")
    if not FASHION.is_dir() and not (data_dir / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    out = tmp_path / "ood"
    _script("ood_gpu.sh", out, 10, data=data_dir)
    _script("ood_gpu.sh", out, 5, data=data_dir)
    for r in ("fashion", "fashion-bg"):
        assert (out / f"{r}.log").read_text().count("stopped by --time-budget") == 2
    config = out / "fashion-bg" / "config.json"
    kept = config.read_text()
    config.write_text("{")  # a training that fails (a damaged run folder) fails the script
    _script("ood_gpu.sh", out, 2, data=data_dir, status=1)
    config.write_text(kept)
    _script("ood_gpu.sh", out, "ood", "--limit", 40, "--fit-limit", 60, data=data_dir)
    result = json.loads((out / "ood-fashion-mnist.json").read_text())
    assert (result["n_in"], result["n_ood"], result["background_mutation_rate"]) == (40, 40, 0.1)
    for score in ("nll", "likelihood_ratio", "typicality", "complexity"):
        assert 0 <= result["scores"][score]["auroc"] <= 1
    assert (out / "ood-fashion-mnist.png").is_file()


def test_m1m2_cpu_chain_resumes_m1_then_trains_and_scores_three_subsets(tmp_path, data_dir):
    if not (data_dir / "mnist").is_dir():
        pytest.skip("the MNIST IDX files are not in the data folder")
    out = tmp_path / "m1m2"
    small = {"M1_EPOCHS": "2", "EPOCHS": "1", "EVAL_EXTRA": "--limit 200"}
    _script("m1m2_cpu.sh", out, 600, 2, data=data_dir, status=2, **small)  # the budget stops M1
    assert "stopped by --time-budget" in (out / "m1.log").read_text()
    assert not list(out.glob("m1m2-*"))  # no M2 run starts on an unfinished M1
    text = _script("m1m2_cpu.sh", out, 600, data=data_dir, **small)
    assert (out / "m1.log").read_text().count("resuming") == 1
    for s in range(3):
        r = json.loads((out / f"m1m2-600-s{s}" / "eval.json").read_text())
        assert r["n"] == 200 and r["iw_samples"] == 100
        config = json.loads((out / f"m1m2-600-s{s}" / "config.json").read_text())["config"]
        assert (config["data"]["labels"], config["data"]["labels_seed"]) == (600, s)
    assert "M1+M2 at 600 labels:" in text and "mean +- sd over 3 subsets" in text
    files = [out / f"m1m2-600-s{s}" / name for s in range(3) for name in ("eval.json", "checkpoint.safetensors")]
    stamps = [f.stat().st_mtime_ns for f in [*files, out / "m1" / "checkpoint.safetensors"]]
    again = _script("m1m2_cpu.sh", out, 600, data=data_dir, **small)  # all done: nothing is trained or scored again
    assert again.splitlines()[-1] == text.splitlines()[-1]
    assert [f.stat().st_mtime_ns for f in [*files, out / "m1" / "checkpoint.safetensors"]] == stamps
    for bad in ("6x", "700"):
        _script("m1m2_cpu.sh", out, bad, data=data_dir, status=1)


def test_rows_script_chunks_side_by_side_reports_and_scores(tmp_path, data_dir):
    """Issue 30's rows: two presets side by side on the embedded digits, a chunk stopped by the
    budget then finished by a resumed one (status says which), the scores, and the exit status of
    an unknown row and of a failed command."""
    out = tmp_path / "rows"
    small = {"EXTRA": "--dataset digits --epochs 2 --prior-components 10"}
    first = _script("rows_gpu.sh", out, 0.01, "vampprior", "hvae-vampprior", data=data_dir, **small)
    assert ", done;" not in first  # one step each, then the budget (3 s let a fast machine finish a row's 2 epochs)
    _script("rows_gpu.sh", out, 600, "vampprior", "hvae-vampprior", data=data_dir, **small)
    status = _script("rows_gpu.sh", out, "status", data=data_dir)
    assert status.count("2 epochs") == 2 and status.count(", done;") == 2, status
    for name in ("vampprior", "hvae-vampprior"):
        assert (out / f"{name}.log").read_text().count("stopped by --time-budget") == 1
    scores = _script("rows_gpu.sh", out, "eval", "vampprior", "hvae-vampprior", data=data_dir, EVAL_EXTRA="--iw-samples 20")
    for name in ("vampprior", "hvae-vampprior"):
        r = json.loads((out / f"{name}.eval.json").read_text())
        assert r["estimate"] == "importance-sampled" and r["iw_samples"] == 20 and r["nll"] > 0
        assert f"{name}: importance-sampled NLL {r['nll']:.3f}" in scores
    assert "unknown row" in _script("rows_gpu.sh", out, 5, "nope", data=data_dir, status=2)
    failed = _script("rows_gpu.sh", tmp_path / "bad", 5, "vampprior", data=data_dir, status=1, EXTRA="--no-such-flag")
    assert "failed: vampprior" in failed
