"""The VQ-VAE's vector quantizer: the nearest code by brute force, the EMA codebook update by
hand, the straight-through gradient, the losses, k-means initialisation and dead-code restarts."""

import pytest
import torch

from dgmkit.nn import quantize
from dgmkit.nn.quantize import VectorQuantizer, perplexity


def _vq(**kw) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(**{"num_codes": 6, "dim": 3, "kmeans_init": False, **kw})


def test_each_vector_goes_to_its_nearest_code():
    vq = _vq().eval()
    z = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    out = vq(z)
    flat = z.movedim(1, -1).reshape(-1, 3)
    brute = torch.cdist(flat, vq.embedding).argmin(1)
    assert torch.equal(out.indices.reshape(-1), brute)
    assert out.indices.shape == (4, 5, 5) and out.z_q.shape == z.shape
    assert torch.allclose(out.z_q, vq.lookup(out.indices))
    assert out.counts.sum() == 100


def test_the_nearest_code_is_found_far_from_the_origin():
    # float32 vectors near 10 with codes 0.05 apart: |x|^2 - 2 x.e + |e|^2 about the origin cancels
    # at 64 * 100 and took a farther code for 8% of them
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(512, 64, generator=g) * 0.05 + 10
    x = torch.randn(2000, 64, generator=g) * 0.05 + 10
    exact = ((x.double()[:, None] - codes.double()[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(quantize._nearest(x, codes), exact)


def test_straight_through_gradient_and_losses():
    vq = _vq(commitment=0.5).eval()
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z)
    w = torch.randn_like(z)
    (out.z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)  # d z_q / d z_e is the identity
    e = vq.lookup(out.indices)
    assert torch.allclose(out.commitment, 0.5 * (z.detach() - e).square().sum((1, 2, 3)))
    assert torch.equal(out.codebook, torch.zeros(2))
    plain = _vq(ema=False).eval()
    out = plain(z.detach())
    assert torch.allclose(out.codebook, (z.detach() - plain.lookup(out.indices)).square().sum((1, 2, 3)))
    out.codebook.sum().backward()
    assert plain.embedding.grad is not None and plain.embedding.grad.abs().sum() > 0


def test_ema_update_equals_the_hand_computation():
    vq = _vq(decay=0.9, eps=1e-5, restart_dead=False, channel_dim=-1).train()
    n0, m0 = vq.cluster_size.clone(), vq.embed_sum.clone()
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    k = torch.cdist(z, vq.embedding).argmin(1)
    out = vq(z)
    assert torch.equal(out.indices, k)
    counts = torch.bincount(k, minlength=6).float()
    sums = torch.stack([z[k == j].sum(0) if (k == j).any() else torch.zeros(3) for j in range(6)])
    n1 = 0.9 * n0 + 0.1 * counts
    m1 = 0.9 * m0 + 0.1 * sums
    total = n1.sum()
    smoothed = (n1 + 1e-5) / (total + 6 * 1e-5) * total
    assert torch.allclose(vq.cluster_size, n1)
    assert torch.allclose(vq.embed_sum, m1)
    assert torch.allclose(vq.embedding, m1 / smoothed[:, None], atol=1e-6)


def test_the_codebook_does_not_move_in_evaluation():
    vq = _vq().eval()
    before = vq.embedding.clone()
    vq(torch.randn(3, 3, 2, 2))
    assert torch.equal(vq.embedding, before)


CENTRES = torch.tensor([[5.0, 0, 0], [-5, 0, 0], [0, 5, 0], [0, -5, 0]])


def _clusters() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return CENTRES[torch.randint(4, (400,), generator=g)] + 0.1 * torch.randn(400, 3, generator=g)


def _a_far_code_is_restarted_on_the_data() -> None:
    """A code far from all data dies (its moving count decays) and is restarted on the data."""
    z = _clusters()
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 3, channel_dim=-1, kmeans_init=False, decay=0.5, dead_threshold=0.01).train()
    with torch.no_grad():
        vq.embedding[0] = torch.tensor([100.0, 100, 100])
        vq.embed_sum[0] = vq.embedding[0]
    for _ in range(12):
        vq(z)
    assert torch.cdist(vq.embedding[:1], z).min() < 1.0
    assert (vq.cluster_size > 0.01).all()


def test_kmeans_initialisation_fits_the_first_batch_and_dead_codes_restart():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 3, channel_dim=-1, kmeans_init=True, restart_dead=False).train()
    vq(_clusters())
    assert bool(vq.initialized)
    err = torch.cdist(CENTRES, vq.embedding).min(1).values
    assert err.max() < 0.5  # every cluster got its own code
    _a_far_code_is_restarted_on_the_data()


def test_an_initialisation_pass_then_a_step_update_the_codebook_as_one_training_pass():
    """What data-parallel ranks run on the whole global batch before their first step
    (nn.data_init.initialisation_pass): the k-means start alone, no moving-average update, so
    that the first step then updates the averages once, as one process's first pass does."""
    from dgmkit.nn.data_init import initialisation_pass

    z = _clusters()
    torch.manual_seed(0)  # (one k-means iteration: the start is no fixed point of the update on the same batch)
    ranks, one = (VectorQuantizer(4, 3, channel_dim=-1, kmeans_iters=1, restart_dead=False).train() for _ in range(2))
    one.load_state_dict(ranks.state_dict())
    torch.manual_seed(1)
    with initialisation_pass(torch.nn.Sequential(ranks)):
        ranks(z)
        started = {k: v.clone() for k, v in ranks.state_dict().items()}
        ranks(z + 1.0)  # initialised: a pass within changes nothing
    assert bool(ranks.initialized) and not ranks.initialising_only
    assert all(torch.equal(v, started[k]) for k, v in ranks.state_dict().items())
    ranks(z)  # the first step's pass
    torch.manual_seed(1)
    one(z)  # one process's first pass: the k-means start and the update
    for k, v in one.state_dict().items():
        torch.testing.assert_close(ranks.state_dict()[k], v, msg=k)
    with pytest.raises(KeyError), initialisation_pass(torch.nn.Sequential(ranks)):
        raise KeyError("a failed pass")
    assert not ranks.initialising_only  # (set back whatever happens)


def test_perplexity_and_bad_input():
    assert perplexity(torch.tensor([5, 5, 5, 5])).item() == pytest.approx(4.0)
    assert perplexity(torch.tensor([9, 0, 0])).item() == pytest.approx(1.0)
    vq = _vq()
    with pytest.raises(ValueError, match="dimension 3"):
        vq(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match="0..5"):
        vq.lookup(torch.tensor([6]))
    with pytest.raises(ValueError):
        VectorQuantizer(1, 3)


def test_the_codebook_learns_in_float32_under_bf16_autocast():
    """Under mixed precision (bf16 autocast, as on a GPU) the encoder's output is bf16: the
    k-means start, the moving averages and the dead-code restarts stay float32."""
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=16, dim=3, dead_threshold=1e9)  # every code dead: every step restarts some
    z = torch.randn(4, 3, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            out = vq(torch.nn.functional.conv2d(z, torch.eye(3).view(3, 3, 1, 1)))  # a bf16 output, as a layer gives
    for t in (vq.embedding, vq.embed_sum, vq.cluster_size):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert out.indices.shape == (4, 5, 5)


def test_dead_codes_restart_without_a_read_as_on_a_gpu(monkeypatch):
    """On a GPU (and when compiled) the restart of dead codes reads nothing back: every code
    draws a vector of the batch and keeps it where it is dead. Only the dead codes move, each to
    a vector of the batch with a count of 1, and the far code of the test above is restarted on
    the data and stays alive."""
    vq = VectorQuantizer(6, 3, channel_dim=-1, kmeans_init=False, decay=0.5, dead_threshold=0.5).train()
    flat = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        vq.cluster_size.copy_(torch.tensor([0.1, 2.0, 0.3, 5.0, 1.0, 0.0]))
    before = vq.embedding.clone()
    torch.manual_seed(0)
    vq._restart_unread(flat, vq.cluster_size < vq.dead_threshold)
    dead = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(vq.embedding[~dead], before[~dead])
    assert all(any(torch.equal(e, v) for v in flat) for e in vq.embedding[dead])
    assert torch.equal(vq.embed_sum[dead], vq.embedding[dead])
    assert vq.cluster_size.tolist() == [1.0, 2.0, 1.0, 5.0, 1.0, 1.0]

    monkeypatch.setattr(quantize, "reads_are_free", lambda t: False)  # the path a GPU takes
    _a_far_code_is_restarted_on_the_data()


def test_the_vq_losses_stop_the_gradients_they_should():
    """commitment beta |z_e - sg(e)|^2 moves only the encoder's output, the codebook loss
    |sg(z_e) - e|^2 only the codes (the codebook learned by gradient: ema=False)."""
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3, ema=False, kmeans_init=False, channel_dim=-1).train()
    z = torch.randn(8, 4, 3, requires_grad=True)
    for loss, moves, stays in (("commitment", 0, 1), ("codebook", 1, 0)):
        grads = torch.autograd.grad(getattr(vq(z), loss).sum(), [z, vq.embedding], allow_unused=True)
        assert grads[moves] is not None and grads[moves].abs().sum() > 0, loss
        assert grads[stays] is None or grads[stays].abs().sum() == 0, loss


def test_the_ema_codebook_smooths_its_counts_over_all_codes():
    """N~_k = (N_k + eps) / (sum_j N_j + K eps) sum_j N_j (Laplace smoothing), seen with a large eps."""
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 3, decay=0.9, eps=0.5, kmeans_init=False, restart_dead=False, channel_dim=-1).train()
    vq(torch.randn(50, 3, generator=torch.Generator().manual_seed(2)))
    n, total = vq.cluster_size, vq.cluster_size.sum()
    torch.testing.assert_close(vq.embedding, vq.embed_sum / ((n + 0.5) / (total + 6 * 0.5) * total)[:, None])


@pytest.mark.parametrize("gpu_path", [False, True])
def test_a_batch_of_fewer_vectors_than_codes_restarts_few_codes_and_keeps_the_codebook(gpu_path, monkeypatch):
    """8 vectors a batch (8 points, jittered) and 32 codes: at least 24 codes go unused in every
    step, and a threshold of 1 vector a batch restarted most of the codebook in every step (1739
    restarts in the last 100 of 300 steps), so that it thrashed. The threshold is now dead_threshold
    times the even share N/K = 1/4: after the start, restarts are rare and every point keeps a
    code. With N >= K nothing changes (``dead_below`` is dead_threshold)."""
    if gpu_path:
        monkeypatch.setattr(quantize, "reads_are_free", lambda t: False)
    g = torch.Generator().manual_seed(3)
    points = 3 * torch.randn(8, 2, generator=g)
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 2, channel_dim=-1).train()
    restarts = []
    for _ in range(300):
        batch = points + 0.05 * torch.randn(8, 2, generator=g)
        vq(batch)
        restarts.append(int((torch.cdist(vq.embedding, batch).min(1).values == 0).sum()))  # (restarted: on a vector)
    assert sum(restarts[-100:]) <= 25, restarts[-100:]
    assert torch.cdist(points, vq.embedding).min(1).values.max() < 0.3
    assert float(vq.dead_below(torch.tensor(64))) == vq.dead_threshold == 1.0
    assert float(vq.dead_below(torch.tensor(8))) == 0.25


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_lookup_takes_codes_of_any_integer_dtype_as_indices(dtype):
    """A codes dataset of K <= 256 stores uint8 codes: torch read a uint8 index as a mask, and
    [1, 0, 3, 2] gave 3 vectors (codes 0, 2, 3); int16 was torch's IndexError."""
    vq = _vq(channel_dim=-1)
    codes = torch.tensor([[1, 0, 3, 2], [5, 5, 4, 0]])
    assert torch.equal(vq.lookup(codes.to(dtype)), vq.embedding[codes])
    for bad in (codes.bool(), codes.double()):
        with pytest.raises(ValueError, match="integers in 0..5"):
            vq.lookup(bad)
