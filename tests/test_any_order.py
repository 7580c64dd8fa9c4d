"""A masked diffusion model read as an any-order autoregressive model: each order's likelihood
by hand, normalisation of the mixture of orders by enumeration, the any-order identity with the
masked bound, the estimator and ``dgm eval --orders``."""

import io
import itertools
import json
import math
import tracemalloc
import zipfile

import pytest
import torch
from torch import nn

from dgmkit import distributed
from dgmkit.cli.main import main
from dgmkit.evaluation import estimate, evaluate
from dgmkit.evaluation.estimates import MAX_ORDERS, draw_orders
from dgmkit.models import MaskedDiffusion


class _Denoiser(nn.Module):
    """An MLP from the one-hot input (B, C (L + 1), H, W) and, unless ``timeless``, the time to
    L logits per entry, (B, C L, H, W); it keeps the most rows it was given."""

    def __init__(self, event: tuple[int, int, int], levels: int, timeless: bool = False):
        super().__init__()
        self.event, self.levels, self.timeless, self.most_rows = event, levels, timeless, 0
        d = math.prod(event)
        self.net = nn.Sequential(nn.Linear(d * (levels + 1) + 1, 16), nn.Tanh(), nn.Linear(16, d * levels))

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        self.most_rows = max(self.most_rows, len(h))
        s = torch.zeros_like(s) if self.timeless else s / 1000
        c, hh, w = self.event
        return self.net(torch.cat([h.flatten(1), s.view(-1, 1)], 1)).view(-1, c * self.levels, hh, w)


def _model(
    d: int = 4, levels: int = 2, steps: int = 0, timeless: bool = False, seed: int = 3, event: tuple | None = None
) -> MaskedDiffusion:
    torch.manual_seed(seed)
    event = event or (1, 1, d)
    return MaskedDiffusion(_Denoiser(event, levels, timeless), event, levels, steps).double().eval()


def _all_images(d: int, levels: int, event: tuple | None = None) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(levels), repeat=d))).view(-1, *(event or (1, 1, d)))


def _by_hand(model: MaskedDiffusion, x: torch.Tensor, order: list[int]) -> float:
    """sum_i log p(x_order[i] | x_order[<i]), one network call a step, the time of D - i masks."""
    d, mask = len(order), model.num_levels
    z = torch.full_like(x, mask)
    total = 0.0
    for i, e in enumerate(order):
        t = (d - i) / (d + 1)
        if model.steps:  # the nearest step; t = 1 (all masks in training) only when all are masked
            t = min(max(round(t * model.steps), 1), model.steps if i == 0 else model.steps - 1) / model.steps
        logits = model.logits(z.view(1, 1, 1, d), torch.tensor([t], dtype=torch.float64))[0, 0, 0]
        total += torch.log_softmax(logits, -1)[e, int(x.flatten()[e])].item()
        z.view(-1)[e] = x.flatten()[e]
    return total


def test_the_network_reads_m_masks_at_a_time_it_was_trained_at():
    assert _model(steps=0).order_time(3, 4) == pytest.approx(3 / 5)
    four = _model(d=64, steps=4)
    assert [four.order_time(m, 64) for m in (64, 63, 49, 40, 1)] == [1.0, 0.75, 0.75, 0.5, 0.25]
    assert _model(d=64, steps=1).order_time(5, 64) == 1.0  # one step: its only time


@pytest.mark.parametrize("steps", [0, 5])
def test_each_order_is_the_chain_rule_by_hand(steps):
    model = _model(steps=steps)
    x = _all_images(4, 2)[[3, 9, 14]]
    orders = torch.tensor([[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]])
    with torch.no_grad():
        got = model.order_log_likelihood(x, orders)
        assert got.shape == (3, 3) and got.dtype == torch.float64
        for b in range(3):
            for j in range(3):
                assert got[b, j].item() == pytest.approx(_by_hand(model, x[b], orders[j].tolist()), abs=1e-12)


@pytest.mark.parametrize("levels", [2, 3])
def test_every_order_and_their_mixture_sum_to_one_over_all_images(levels):
    d = 3 if levels == 3 else 4
    model = _model(d, levels)
    x = _all_images(d, levels)
    orders = draw_orders(4, d, torch.Generator().manual_seed(1))
    with torch.no_grad():
        per = model.order_log_likelihood(x, orders)  # (L^D, 4)
    assert torch.logsumexp(per, 0).abs().max().item() < 1e-10  # each order a normalised model
    mixture = torch.logsumexp(per, 1) - math.log(4)
    assert torch.logsumexp(mixture, 0).item() == pytest.approx(0.0, abs=1e-10)
    assert (mixture >= per.mean(1) - 1e-12).all()  # log of the mean >= mean of the logs
    assert not torch.allclose(per[:, 0], per[:, 1])  # the orders are different models


@pytest.mark.parametrize("event", [(2, 1, 2), (1, 2, 2), (2, 2, 1)])
@pytest.mark.parametrize("steps", [0, 3])
def test_orders_of_several_channels_and_levels_are_normalised(event, steps):
    model = _model(levels=3, steps=steps, event=event)
    per = model.order_log_likelihood(_all_images(4, 3, event), draw_orders(5, 4, torch.Generator().manual_seed(7)))
    assert torch.logsumexp(per, 0).abs().max().item() < 1e-10
    assert abs(torch.logsumexp(torch.logsumexp(per, 1) - math.log(5), 0).item()) < 1e-10


def _exact_count_bound(model: MaskedDiffusion, x: torch.Tensor) -> float:
    """sum_{m=1..D} (1/m) mean over the sets S of m masked entries of sum_{d in S} log p(x_d | x
    outside S): the masked bound of a network that ignores the time, by enumeration."""
    d, mask, total = x.numel(), model.num_levels, 0.0
    for m in range(1, d + 1):
        sets = list(itertools.combinations(range(d), m))
        acc = 0.0
        for s in sets:
            z = x.clone().view(-1)
            z[list(s)] = mask
            logp = torch.log_softmax(model.logits(z.view(1, 1, 1, d), torch.zeros(1, dtype=torch.float64)), -1)[0, 0, 0]
            acc += sum(logp[e, int(x.view(-1)[e])].item() for e in s)
        total += acc / len(sets) / m
    return total


def test_the_mean_over_all_orders_is_the_masked_bound():
    """E_sigma log p(x | sigma) over all D! orders equals the masked diffusion bound (Hoogeboom
    et al. 2022): the any-order model and the masked model are one model, read two ways."""
    d = 4
    model = _model(d, timeless=True)
    orders = torch.tensor(list(itertools.permutations(range(d))))
    with torch.no_grad():
        for x in _all_images(d, 2)[[0, 6, 11, 15]]:
            mean = model.order_log_likelihood(x.unsqueeze(0), orders).mean().item()
            assert mean == pytest.approx(_exact_count_bound(model, x), abs=1e-10)


def test_orders_are_checked():
    model = _model()
    x = _all_images(4, 2)[:2]
    for bad in (torch.tensor([[0, 1, 1, 3]]), torch.tensor([[0, 1, 2]]), torch.zeros(0, 4, dtype=torch.long)):
        with pytest.raises(ValueError, match="orders"):
            model.order_log_likelihood(x, bad)
    with pytest.raises(ValueError, match=r"^order_log_likelihood was given data of shape \(2, 1, 2, 2\)"):
        model.order_log_likelihood(x.view(2, 1, 2, 2), torch.tensor([[0, 1, 2, 3]]))  # (its words name the method)
    with pytest.raises(ValueError, match=r"orders must be \(M, D\) with M >= 1, got shape \(4,\)"):
        estimate(model, x, orders=torch.arange(4))
    # the estimators' entry point names a model that has no likelihood in an order (the CLI refuses it earlier)
    from dgmkit.errors import EvaluationError
    from dgmkit.families.vae import VAEConfig

    vae = VAEConfig(hidden=[8], latent_dim=2).build((1, 1, 4), 2)
    with pytest.raises(EvaluationError, match="VAE is not an any-order model"):
        estimate(vae, x.view(2, 1, 1, 4).float(), orders=torch.tensor([[0, 1, 2, 3]]))


def test_the_estimator_is_seeded_batch_invariant_and_reports_the_mean_as_its_bound():
    model = _model()
    x = _all_images(4, 2)

    def run(seed: int, batch_size: int):
        return estimate(model, x, 0, None, batch_size, orders=draw_orders(3, 4, torch.Generator().manual_seed(seed)))

    a, b, c = run(0, 1000), run(0, 3), run(1, 1000)
    assert a.kind == "order-mixture" and a.k == 3
    assert torch.allclose(a.log_px, b.log_px, rtol=0, atol=1e-12)  # the same orders however the data are batched
    assert not torch.equal(a.log_px, c.log_px)  # another seed, other orders
    assert (a.terms["elbo"] <= a.log_px + 1e-12).all()
    assert torch.logsumexp(a.log_px, 0).item() == pytest.approx(0.0, abs=1e-10)
    r = evaluate(model, x.double(), seed=0, orders=3)  # the orders of a CPU generator seeded by seed
    assert r.estimate == "order-mixture" and r.iw_samples == 3 and r.variance_reduction is None
    assert r.nll == pytest.approx(-a.log_px.mean().item()) and r.elbo <= -r.nll
    assert not r.terms  # the bound's KL split belongs to the time-sampled estimate only


def test_cli_scores_a_masked_diffusion_run_by_a_mixture_of_orders(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "diffusion", "--process", "masked", "--dataset", "digits", "--epochs", "1"]
    assert main([*args, "--unet-channels", "8", "8", "--out", str(out), "--quiet"]) == 0
    assert main(["eval", str(out), "--orders", "2", "--limit", "6"]) == 0
    text = capsys.readouterr().out
    assert "NLL (exact, 2 orders)" in text and "the NLL is exact" in text
    r = json.loads((out / "eval.json").read_text())
    assert r["estimate"] == "order-mixture" and r["iw_samples"] == 2 and r["n"] == 6
    assert r["elbo"] <= -r["nll"] and r["bpd"] == pytest.approx(r["nll"] / (64 * math.log(2)))
    assert main(["eval", str(out), "--orders", "2", "--time-samples", "4"]) == 1
    assert "takes no --iw-samples or --time-samples" in capsys.readouterr().err
    assert main(["eval", str(out), "--orders", "0"]) == 1
    assert "--orders must be in 1..4096" in capsys.readouterr().err


def test_cli_refuses_orders_for_a_model_without_them(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert main(["eval", str(out), "--orders", "2"]) == 1
    assert "is not an any-order model" in capsys.readouterr().err


def test_the_network_sees_at_most_batch_size_rows():
    model = _model()
    orders = draw_orders(8, 4, torch.Generator().manual_seed(0))
    a = estimate(model, _all_images(4, 2), 0, None, batch_size=3, orders=orders)
    assert 1 <= model.net.most_rows <= 3
    b = estimate(model, _all_images(4, 2), 0, None, batch_size=1000, orders=orders)
    assert torch.allclose(a.log_px, b.log_px, rtol=0, atol=1e-12)


def test_every_rank_scores_rank_0_s_orders(monkeypatch):
    """Under torchrun each rank scores its share of the data with the orders of rank 0, even where
    a caller drew different ones on each rank: one mixture, normalised when gathered."""
    model, x = _model(), _all_images(4, 2)
    monkeypatch.setattr(distributed, "gather_rows", lambda t: t)
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj: [obj, obj])  # (the ranks' same-data check)
    sent: list = []  # broadcast_object with the two ranks run one after the other: rank 0's object
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, src=0: sent.append(obj) or sent[0])
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "current", lambda rank=rank: distributed.Context(rank, 2, rank))
        own = draw_orders(3, 4, torch.Generator().manual_seed(100 + rank))
        parts.append(estimate(model, x, 0, None, 1000, orders=own).log_px)
    assert sum(len(p) for p in parts) == len(x)
    assert abs(torch.logsumexp(torch.cat(parts), 0).item()) < 1e-10


def test_evaluate_draws_the_orders_on_the_cpu_from_its_seed(monkeypatch):
    """The same seed is the same mixture on any device: evaluate draws the orders from a CPU
    generator seeded by seed, never from the data's device."""
    import dgmkit.evaluation.report as report

    seen = []
    real = report.draw_orders
    monkeypatch.setattr(report, "draw_orders", lambda m, d, g: seen.append(g.device) or real(m, d, g))
    model, x = _model(), _all_images(4, 2)
    r = evaluate(model, x, seed=5, orders=2)
    assert seen == [torch.device("cpu")]
    want = estimate(model, x, 0, None, orders=draw_orders(2, 4, torch.Generator().manual_seed(5))).log_px
    assert r.nll == pytest.approx(-want.mean().item(), abs=1e-12)
    for bad in (-1, MAX_ORDERS + 1, 10**9):  # (10**9: (M, D) orders drawn until memory ran out)
        with pytest.raises(ValueError, match=f"orders must be an integer in 0..{MAX_ORDERS}"):
            evaluate(model, x, orders=bad)
    with pytest.raises(ValueError, match="at least one order"):
        draw_orders(0, 4)


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ao") / "run"
    args = ["train", "--model", "diffusion", "--process", "masked", "--dataset", "digits", "--epochs", "1"]
    assert main([*args, "--unet-channels", "8", "8", "--out", str(out), "--quiet"]) == 0
    return out


def _counting(monkeypatch, fail_at: int | None = None) -> list:
    """Count the orders that MaskedDiffusion scores (one call per order and batch); raise at call
    ``fail_at`` (a kill mid-evaluation)."""
    calls: list = []
    real = MaskedDiffusion.order_log_likelihood

    def wrapped(self, x, orders):
        calls.append(orders[0].tolist())
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("killed")
        return real(self, x, orders)

    monkeypatch.setattr(MaskedDiffusion, "order_log_likelihood", wrapped)
    return calls


def test_a_stopped_order_evaluation_goes_on_where_it_was(masked_run, monkeypatch, capsys):
    args = ["eval", str(masked_run), "--limit", "5", "--seed", "3"]
    calls = _counting(monkeypatch, fail_at=2)
    assert main([*args, "--orders", "3"]) == 130  # interrupted in its second order: the first is kept
    assert "order 0: scored in" in capsys.readouterr().out
    (folder,) = (masked_run / "orders").iterdir()
    assert sorted(f.name for f in folder.iterdir()) == ["order-0.npz"]
    calls = _counting(monkeypatch)
    assert main([*args, "--orders", "3"]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 2 and "a stopped evaluation goes on" in out
    assert "order 0: read back from order-0.npz" in out and "order 2: scored in" in out and "order 0: scored" not in out
    resumed = json.loads((masked_run / "eval.json").read_text())
    assert resumed["order_files"] == f"orders/{folder.name}"  # relative: no machine's paths in the record
    calls = _counting(monkeypatch)
    assert main([*args, "--orders", "4"]) == 0 and len(calls) == 1  # the first three are the same orders
    for f in folder.iterdir():
        f.unlink()
    assert main([*args, "--orders", "3"]) == 0
    fresh = json.loads((masked_run / "eval.json").read_text())
    assert fresh["nll"] == pytest.approx(resumed["nll"], abs=1e-9) and fresh["elbo"] == pytest.approx(resumed["elbo"])
    calls = _counting(monkeypatch)
    assert main([*args[:-1], "4", "--orders", "3"]) == 0 and len(calls) == 3  # another seed: other orders, own folder
    assert len(list((masked_run / "orders").iterdir())) == 2


def _npy(a) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize(
    "damage", ["garbage", "other order", "nan", "short", "extra array", "compressed bomb", "huge header", "big-endian"]
)
def test_a_damaged_order_file_is_refused_by_name(masked_run, capsys, damage):
    """A stored order that is not exactly this evaluation's is refused by name, and read no
    further than its header says it should be (a compressed member declaring 3e8 values, or a
    header claiming 10**12 of them, took gigabytes before the check)."""
    import numpy as np

    args = ["eval", str(masked_run), "--limit", "4", "--seed", "11", "--orders", "1"]
    assert main(args) == 0
    (folder,) = [d for d in (masked_run / "orders").iterdir() if sorted(f.name for f in d.iterdir()) == ["order-0.npz"]]
    path = folder / "order-0.npz"
    with np.load(path) as f:
        order, values = f["order"], f["values"]
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "other order":
        np.savez(path, order=order[::-1].copy(), values=values)
    elif damage == "nan":
        np.savez(path, order=order, values=np.full_like(values, np.nan))
    elif damage == "short":
        np.savez(path, order=order, values=values[:2])
    elif damage == "extra array":
        np.savez(path, order=order, values=values, more=values)
    elif damage == "compressed bomb":
        np.savez_compressed(path, order=order, values=np.zeros(30_000_000))  # 240 MB of values in a small file
        assert path.stat().st_size < 1 << 20
    elif damage == "huge header":
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("order.npy", _npy(order))
            z.writestr("values.npy", buf.getvalue() + values.tobytes())
    else:
        np.savez(path, order=order, values=values.astype(">f8"))
    capsys.readouterr()
    tracemalloc.start()  # (NumPy's arrays are traced)
    try:
        assert main(args) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert str(path) in err and "delete it to compute it again" in err
    assert peak < 64 << 20, peak
    path.unlink()


@pytest.mark.parametrize("damage", ["truncated values", "trailing bytes", "npy version 3"])
def test_an_order_file_whose_header_does_not_fit_its_data_is_refused_by_name(tmp_path, damage):
    """The .npy header of the values must be a format NumPy writes and say exactly as many bytes
    as follow it: a file cut short, one with more after it, or a header of an unknown format
    version is not this evaluation's order (the same file whole is read back)."""
    import numpy as np

    from dgmkit.errors import EvaluationError
    from dgmkit.evaluation.order_files import OrderFiles

    store, order, values = OrderFiles(tmp_path, 5), torch.tensor([2, 0, 1, 3]), -torch.arange(5.0)  # (log p <= 0)
    store.put(0, order, values)
    torch.testing.assert_close(store.get(0, order), values.double())
    data = _npy(values.double().numpy())
    data = {"truncated values": data[:-8], "trailing bytes": data + bytes(8)}.get(damage, data)
    if damage == "npy version 3":
        data = data[:6] + b"\x03" + data[7:]
    path = tmp_path / "order-0.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("order.npy", _npy(order.numpy().astype(np.int64)))
        z.writestr("values.npy", data)
    with pytest.raises(EvaluationError) as refusal:
        store.get(0, order)
    assert str(path) in str(refusal.value) and "delete it to compute it again" in str(refusal.value)
    what = {"npy version 3": "format version (3, 0)"}.get(damage, "bytes of data, not the 40 its header gives")
    assert what in str(refusal.value)


def test_the_python_api_scores_orders_without_writing_them(masked_run):
    """dgmkit.evaluate writes nothing (its docstring's promise): the orders it scores are not kept
    in the run folder, as dgm eval keeps them."""
    import dgmkit

    listing = lambda: sorted(p.relative_to(masked_run) for p in masked_run.rglob("*"))  # noqa: E731
    before = listing()
    result = dgmkit.evaluate(dgmkit.load(masked_run), orders=1, limit=3, seed=23)
    assert result.estimate == "order-mixture" and result["order_files"] is None
    assert listing() == before


@pytest.mark.parametrize("kind", ["deflated, damaged", "lzma, damaged", "encrypted", "unknown method"])
def test_an_order_file_compressed_or_encrypted_is_refused_by_name(tmp_path, kind):
    """OrderFiles.put writes stored members only; a compressed or encrypted one is not this
    evaluation's (a damaged deflated member raised zlib.error, a damaged LZMA one LZMAError, an
    encrypted one RuntimeError, an unknown method NotImplementedError: `dgm eval` reported an
    internal error, not the file to delete)."""
    import struct

    from dgmkit.errors import EvaluationError
    from dgmkit.evaluation.order_files import OrderFiles

    store, order, values = OrderFiles(tmp_path, 5), torch.tensor([2, 0, 1, 3]), -torch.arange(5.0)
    method = {"deflated, damaged": zipfile.ZIP_DEFLATED, "lzma, damaged": zipfile.ZIP_LZMA}.get(kind, zipfile.ZIP_STORED)
    path = tmp_path / "order-0.npz"
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr("order.npy", _npy(order.numpy()))
        z.writestr("values.npy", _npy(values.double().numpy()))
    data = bytearray(path.read_bytes())
    for sig, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # each member's header, local and central
        at = data.find(sig)
        while at >= 0:
            if kind == "encrypted":
                data[at + flags] |= 1
            elif kind == "unknown method":
                data[at + flags + 2 : at + flags + 4] = struct.pack("<H", 99)
            else:  # the compressed data just after the first member's local header
                start = at + 30 + len("order.npy") if sig == b"PK\x03\x04" and at == 0 else None
                if start is not None:
                    data[start + 9 : start + 25] = bytes(b ^ 0x5A for b in data[start + 9 : start + 25])
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(EvaluationError) as refusal:
        store.get(0, order)
    assert str(path) in str(refusal.value) and "compressed or encrypted" in str(refusal.value)


@pytest.mark.parametrize("kind", ["link to a stored order", "link to nothing", "fifo"])
def test_an_order_file_that_is_a_link_or_no_file_is_refused_and_kept(tmp_path, kind):
    """A link at order-J.npz is no file of this evaluation: one to another folder's stored order
    was read back as this one's, and one to nothing (or a FIFO) was taken for a missing order and
    replaced by the new one. Each is refused by name and left as it is."""
    import os

    from dgmkit.errors import EvaluationError
    from dgmkit.evaluation.order_files import OrderFiles

    order, values = torch.tensor([2, 0, 1, 3]), -torch.arange(5.0)
    other = OrderFiles(tmp_path / "other", 5)
    other.put(0, order, values)
    path = tmp_path / "this" / "order-0.npz"
    path.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(other.folder / "order-0.npz" if kind == "link to a stored order" else tmp_path / "nothing")
    with pytest.raises(EvaluationError) as refusal:
        OrderFiles(path.parent, 5).get(0, order)
    assert str(path) in str(refusal.value) and "delete it to compute it again" in str(refusal.value)
    assert path.is_symlink() == (kind != "fifo") and not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("linked", ["orders", "its key folder"])
def test_orders_are_kept_only_inside_the_run_folder(masked_run, tmp_path, capsys, linked):
    """A link at the run's orders/ (or at its key folder) was followed: dgm eval --orders wrote
    its order files in the folder it points to, outside the run. It is refused by name, and
    nothing is written there."""
    args = ["eval", str(masked_run), "--limit", "2", "--seed", "29", "--orders", "1"]
    assert main(args) == 0
    saved = tmp_path / "saved"
    (masked_run / "orders").rename(saved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if linked == "orders":
        (masked_run / "orders").symlink_to(elsewhere)
    else:
        (masked_run / "orders").mkdir()
        for key in saved.iterdir():
            (masked_run / "orders" / key.name).symlink_to(elsewhere)
    try:
        capsys.readouterr()
        assert main(args) == 1
        assert "is a symbolic link" in capsys.readouterr().err and list(elsewhere.iterdir()) == []
    finally:
        link = masked_run / "orders"
        if link.is_symlink():
            link.unlink()
        else:
            for key in link.iterdir():
                key.unlink()
            link.rmdir()
        saved.rename(link)


def test_orders_that_are_not_integers_are_refused_not_truncated():
    model = _model()
    x = _all_images(4, 2)[:2]
    order = torch.tensor([[2, 0, 3, 1]])
    for bad in (order.double() + 0.5, order.float(), torch.tensor([[False, True, True, False]])):
        with pytest.raises(ValueError, match="orders must be integer permutations"):
            estimate(model, x, orders=bad)
    assert torch.equal(model.order_log_likelihood(x, order.int()), model.order_log_likelihood(x, order))
