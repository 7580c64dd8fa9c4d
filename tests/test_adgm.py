"""The auxiliary deep generative models (ADGM, SDGM): their bounds against log p(x) and log p(x, y)
computed by quadrature, the ADGM's p(x) against M2's form (a integrates out), the classifier's
average over draws of a, gradients to every network, sampling and the command line."""

import json
import math

import pytest
import torch
from torch import nn

from dgmkit.cli.main import main
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.models import AuxiliaryDGM
from dgmkit.objectives import importance_sampled_log_likelihood

K = 2
IMAGES = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * 4).view(16, 1, 2, 2)  # every 2x2 binary image


def _tiny(skip: bool, seed: int = 0, latent: int = 1, aux: int = 1, widen: float = 0.0) -> AuxiliaryDGM:
    """A small random model; ``widen``: added to the raw scales of q(a|x) and q(z|a,x,y), so that
    the proposal covers the posterior (importance sampling from a proposal much narrower than
    its target has infinite variance: its estimates of log p(x) converge too slowly to test)."""
    torch.manual_seed(seed)
    cfg = RunConfig.of(model="adgm", skip=skip, hidden=[6], latent_dim=latent, aux_dim=aux, classes=K, class_samples=64)
    model = build_model(cfg, (1, 2, 2), 2)
    with torch.no_grad():  # away from the initialisation's near-uniform outputs
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
        for q in (model.aux_encoder, model.encoder):
            last = [layer for layer in q.net.modules() if isinstance(layer, nn.Linear)][-1]
            last.bias[q.latent_dim :] += widen
    return model.eval()


@torch.no_grad()
def _log_p_xy(model: AuxiliaryDGM, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """log p(x, y), shape (B, K), by the rectangle rule over a grid of (z, a) (1-D each)."""
    za = torch.cartesian_prod(axis, axis)  # (S, 2): [z, a]
    cell = 2 * math.log(float(axis[1] - axis[0]))
    out = []
    for c in range(K):
        y = nn.functional.one_hot(torch.full((len(za),), c), K).float()
        latent = torch.cat([y, za], -1).unsqueeze(1).expand(len(za), len(x), -1)
        log_px, log_prior = model.log_joint(x, latent)
        out.append(torch.logsumexp(log_px + log_prior, 0) + cell)
    return torch.stack(out, -1)


AXIS = torch.linspace(-9, 9, 361)


@pytest.mark.parametrize("skip", [False, True], ids=["adgm", "sdgm"])
def test_bounds_against_log_likelihood_by_quadrature(skip):
    model = _tiny(skip, widen=4.0)
    log_pxy = _log_p_xy(model, IMAGES, AXIS)
    log_px = torch.logsumexp(log_pxy, -1)
    total = torch.logsumexp(log_px, 0).exp().item()
    assert abs(total - 1) < 1e-3, f"p(x) sums to {total} over all 16 images: the grid or the model is off"

    torch.manual_seed(1)
    draws = 400
    elbo = torch.stack([model.elbo_terms(IMAGES)["elbo"] for _ in range(draws)]).double()
    e_mean, e_se = elbo.mean(0), elbo.std(0) / math.sqrt(draws)
    iwae = importance_sampled_log_likelihood(model, IMAGES, k=4000).double()
    exact = log_px.double()
    assert (e_mean <= exact + 5 * e_se + 1e-4).all(), f"E[U(x)] {e_mean} above log p(x) {exact}"
    assert (e_mean <= iwae + 5 * e_se).all(), "the bound must not exceed IWAE-4000"
    assert (iwae - exact).abs().max() < 0.1, f"IWAE-4000 {iwae} far from log p(x) {exact}"
    assert (exact - e_mean).min() > 0.5, "the test cannot tell the bound from log p(x)"

    # the labelled bound: E[L(x, y)] <= log p(x, y) for every class
    bounds = torch.stack([model.enumerate(IMAGES).bound for _ in range(draws)]).double()  # (R, 16, K)
    b_mean, b_se = bounds.mean(0), bounds.std(0) / math.sqrt(draws)
    assert (b_mean <= log_pxy.double() + 5 * b_se + 1e-4).all()


def test_adgm_auxiliary_factor_integrates_out():
    """ADGM: p(x) = sum_y p(y) integral p(z) p(x|y,z) dz, M2's marginal: p(a|x,y,z) integrates to one."""
    model = _tiny(skip=False)
    z = AXIS[:, None]
    per_class = []
    for c in range(K):
        y = nn.functional.one_hot(torch.full((len(z),), c), K).float()
        with torch.no_grad():
            log_px = model.decoder(torch.cat([y, z], -1)).log_prob(IMAGES[:, None].expand(16, len(z), 1, 2, 2))
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z[:, 0])
        per_class.append(torch.logsumexp(log_px + log_pz, -1) + math.log(float(AXIS[1] - AXIS[0])) - math.log(K))
    one_d = torch.logsumexp(torch.stack(per_class, -1), -1)
    two_d = torch.logsumexp(_log_p_xy(model, IMAGES, AXIS), -1)
    torch.testing.assert_close(one_d, two_d, atol=1e-3, rtol=0)


def test_sdgm_uses_a_in_its_generative_model_and_adgm_does_not():
    for skip in (False, True):
        model = _tiny(skip)
        latents = torch.cat([torch.eye(K)[[0, 1]], torch.zeros(2, 1), torch.tensor([[-2.0], [2.0]])], -1)
        with torch.no_grad():
            a_lo = model.log_joint(IMAGES[:2], latents[:1].expand(2, -1)).log_px_z
            a_hi = model.log_joint(IMAGES[:2], torch.cat([latents[:1, :-1], latents[1:, -1:]], -1).expand(2, -1)).log_px_z
        assert torch.allclose(a_lo, a_hi) != skip, f"skip={skip}: p(x|.) should {'' if skip else 'not '}read a"
        # p(a|x,y,z) reads x in the ADGM; p(a|y,z) does not in the SDGM
        with torch.no_grad():
            x_a = model.log_joint(IMAGES[[0]], latents[:1]).log_pz
            x_b = model.log_joint(IMAGES[[15]], latents[:1]).log_pz
        assert torch.allclose(x_a, x_b) == skip, f"skip={skip}: p(a|.) should {'not ' if skip else ''}read x"


def test_classifier_averages_q_y_given_a_over_draws_of_a():
    model = _tiny(skip=True)
    x = IMAGES[3:9]
    torch.manual_seed(7)
    got = model.class_log_probs(x)
    torch.manual_seed(7)
    flat = x.flatten(1)
    a = model.aux_encoder(flat).sample((model.class_samples,))
    by_hand = torch.log_softmax(model.classifier(torch.cat([flat.expand(len(a), -1, -1), a], -1)), -1).exp().mean(0).log()
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.logsumexp(-1), torch.zeros(len(x)), atol=1e-5, rtol=0)
    single = model.enumerate(x).log_qy  # q(y|a,x) at one draw of a: not the average
    assert not torch.allclose(single, got, atol=1e-3)


def test_validation_accuracy_is_the_classifiers_average_over_draws_of_a(monkeypatch):
    """In eval mode (the Trainer's validation, the epoch line's "valid acc") the objective's
    accuracy is that of the classifier q(y|x) = E[q(y|a,x)] (``class_log_probs``, its
    ``class_samples`` draws of a, as ``dgm eval``'s), not of q(y|a,x) at the one draw of a the
    bound used; those draws leave the random state as the bound alone leaves it (training's
    draws after a validation are the same). In training mode it is the one draw's."""
    model = _tiny(skip=True)
    objective = build_objective(RunConfig.of(model="adgm", skip=True, classes=K))
    y = torch.arange(16) % K
    torch.manual_seed(5)
    objective(model.eval(), IMAGES, y=y)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    model.enumerate(IMAGES)
    assert torch.equal(after, torch.get_rng_state())
    torch.manual_seed(6)
    one_draw = (model.enumerate(IMAGES).log_qy.argmax(-1) == y).float()
    torch.manual_seed(6)
    assert torch.equal(objective(model.train(), IMAGES, y=y).accuracy, one_draw)
    guess = torch.where(torch.arange(16) < 8, 1 - y, y)  # the first 8 wrong, the others right
    monkeypatch.setattr(model, "class_log_probs", lambda x: torch.log_softmax(10.0 * nn.functional.one_hot(guess, K), -1))
    assert objective(model.eval(), IMAGES, y=y).accuracy.tolist() == [0.0] * 8 + [1.0] * 8


@pytest.mark.parametrize("skip", [False, True], ids=["adgm", "sdgm"])
def test_objective_reaches_every_network(skip):
    model = _tiny(skip, latent=2, aux=3).train()
    cfg = RunConfig.of(model="adgm", skip=skip, classes=K)
    objective = build_objective(cfg)
    x = IMAGES[[1, 5, 9, 14]]
    y = torch.tensor([0, -1, 1, -1])
    terms = objective(model, x, y=y)
    assert terms.labelled.tolist() == [1, 0, 1, 0]
    terms.loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_sampling_is_seeded_and_cycles_the_classes(monkeypatch):
    model = _tiny(skip=True)
    seen = []
    p_x = model._p_x
    monkeypatch.setattr(model, "_p_x", lambda y, z, a: seen.append(y.argmax(-1)) or p_x(y, z, a))
    s1, m1 = model.sample(6, generator=torch.Generator().manual_seed(3))
    s2, m2 = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (6, 1, 2, 2) and torch.equal(s1, s2) and torch.equal(m1, m2)
    assert set(s1.unique().tolist()) <= {0.0, 1.0}
    assert seen[0].tolist() == [0, 1, 0, 1, 0, 1]


def test_cli_trains_and_reports_accuracy(tmp_path, capsys):
    out = tmp_path / "sdgm"
    argv = ["train", "--dataset", "digits", "--model", "adgm", "--skip", "--labels", "30", "--hidden", "16"]
    argv += ["--latent-dim", "2", "--aux-dim", "2", "--class-samples", "4", "--labelled-batch", "8"]
    argv += ["--batch-size", "64", "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--iw-samples", "5"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "error on all" in text and "KL of a" in text
    report = json.loads((out / "eval.json").read_text())
    parts = {t["name"]: t["value"] for t in report["terms"]}
    # the parts are float32 per datapoint, summed before the mean on one side and after it on the other
    assert math.isclose(parts["kl_a"] + parts["kl_z"] + parts["kl_y"], report["kl"], rel_tol=1e-6)


def test_elbo_terms_split_the_kl_of_the_same_bound_that_training_uses():
    model = _tiny(skip=False, latent=2, aux=2)
    x = IMAGES[2:10]
    torch.manual_seed(4)
    terms = model.elbo_terms(x)
    torch.manual_seed(4)
    u = model.enumerate(x).unlabelled()
    torch.testing.assert_close(terms["elbo"], u)
    torch.testing.assert_close(terms["kl_a"] + terms["kl_z"] + terms["kl_y"], terms["kl"])
    torch.testing.assert_close(terms["recon"] - terms["kl"], terms["elbo"])
    assert (terms["kl_z"] >= 0).all() and (terms["kl_y"] >= -1e-6).all()


def test_a_decoder_that_is_not_a_decoder_is_refused_where_the_model_is_built():
    m = _tiny(skip=False)
    parts = (m.aux_encoder, m.classifier, m.encoder, m.aux_decoder)
    with pytest.raises(TypeError, match="the decoder must be a dgmkit.conditional.Decoder, got Linear"):
        AuxiliaryDGM(*parts, nn.Linear(4, 16), K, 1, 1, (1, 2, 2))  # type: ignore[arg-type]
    assert AuxiliaryDGM(*parts, m.decoder, K, 1, 1, (1, 2, 2)).event_shape == (1, 2, 2)
    for classes, latent, needle in [
        (1, 1, "the semi-supervised VAE's num_classes must be an integer >= 2, got 1"),
        (2.0, 1, "num_classes must be an integer >= 2, got 2.0"),
        (K, 0, "the semi-supervised VAE's latent_dim must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=needle):
            AuxiliaryDGM(*parts, m.decoder, classes, latent, 1, (1, 2, 2))


@pytest.mark.parametrize("skip", [False, True], ids=["adgm", "sdgm"])
def test_the_elbo_gradient_of_the_auxiliary_encoder_is_the_pathwise_derivative(skip):
    """a ~ q(a|x) is reparameterized and q(y|a, x) sees a with its gradient: a draw without one
    leaves every value the same and trains q(a|x) by its KL alone."""
    from pathwise import check_directional_derivative

    model = _tiny(skip).double()
    x = IMAGES.double()
    check_directional_derivative(lambda: model.elbo_terms(x)["elbo"].sum(), list(model.aux_encoder.parameters()))


@pytest.mark.parametrize(
    "setting, value", [("class_samples", 2.5), ("class_samples", "3"), ("aux_dim", 0), ("aux_dim", 1.5)]
)
def test_the_constructor_refuses_counts_that_are_not_whole_by_name(setting, value):
    """2.5 draws of a met a TypeError inside torch.Size at the first classification, "3" a
    TypeError at the check, and an aux_dim of 0 was taken."""
    m = _tiny(skip=False)
    parts = dict(aux_encoder=m.aux_encoder, classifier=m.classifier, encoder=m.encoder, aux_decoder=m.aux_decoder)
    shapes = dict(num_classes=m.num_classes, latent_dim=m.latent_dim, aux_dim=m.aux_dim, event_shape=m.event_shape)
    with pytest.raises(ValueError, match=f"the auxiliary model's {setting} must be an integer >= 1, got"):
        AuxiliaryDGM(**parts, decoder=m.decoder, **{**shapes, setting: value})  # type: ignore[arg-type]
