"""What `dgm impute` writes is what it scores: a .npz holds an archive, whole-number columns and
data stored as levels are imputed as such in every output and scored so, the draws of a model of
binarized levels are refused, and a model that never saw incomplete inputs is said to be one."""

import numpy as np
import pytest

from dgmkit.cli.main import main


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _people(path, n=200):
    """A table of whole-number columns (age, kids), a float one (income) and a categorical one."""
    rng = np.random.default_rng(0)
    lines = ["age,income,kids,colour"]
    for _ in range(n):
        age = int(rng.integers(18, 80))
        lines.append(f"{age},{1000 * age + rng.normal(0, 5000):.2f},{int(rng.integers(0, 5))},{rng.choice(['red', 'blue'])}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    d = tmp_path_factory.mktemp("people")
    table = _people(d / "people.csv")
    run = d / "R"
    code = main(["train", "--dataset", str(table), "--likelihood", "mixed", "--objective", "miwae", "--missing-rate",
                 "0.3", "--latent-dim", "2", "--hidden", "16", "--epochs", "3", "--quiet", "--out", str(run)])  # fmt: skip
    assert code == 0
    return table, run


def test_an_npz_out_without_draws_is_an_archive_of_x(people, tmp_path, capsys):
    _, run = people
    code, _, err = _run(capsys, "impute", run, "--k", "5", "--out", tmp_path / "i.npz")
    assert code == 0, err
    with np.load(tmp_path / "i.npz") as z:  # (was a .npy file under the .npz name: z["x"] failed)
        assert set(z.files) == {"x"} and not np.isnan(z["x"]).any()
    code, _, err = _run(capsys, "impute", run, "--k", "5", "--out", tmp_path / "i.npy")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "i.npy"), np.load(tmp_path / "i.npz")["x"])
