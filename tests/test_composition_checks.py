"""Parts composed by hand from Python meet the checks the CLI's data path has: data a likelihood
does not define are refused where they enter (evaluation, the Trainer), and parts whose shapes
do not fit get an error that names the part, never a silent wrong number or a bare broadcast
error."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal, StudentT

from dgmkit.conditional import BernoulliHead, CategoricalHead, Decoder, GaussianEncoder, GaussianHead
from dgmkit.data import DataTransform, Split
from dgmkit.errors import DataError
from dgmkit.evaluation import evaluate, importance_sampled_log_likelihood
from dgmkit.models import VAE, LatentVariableModel
from dgmkit.nn import MLP
from dgmkit.objectives import ELBO, IWAE, Objective
from dgmkit.priors import Prior, StandardNormalPrior
from dgmkit.training import Trainer

M = 3


def _vae(head=None, prior=None, enc_out: int = 2 * M, dec_out: int = 16) -> VAE:
    torch.manual_seed(0)
    head = BernoulliHead() if head is None else head
    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), MLP(16, [8], enc_out)), M)
    decoder = Decoder(MLP(M, [8], dec_out * head.params_per_pixel), head, (1, 4, 4))
    return VAE(encoder, decoder, StandardNormalPrior(M) if prior is None else prior)


def _binary(n: int = 6) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(0))


class _FactorPrior(Prior):
    """p(z) as a Normal whose event is one dimension (no Independent): log_prob gives (*, M)."""

    def __init__(self):
        super().__init__(M)

    def forward(self, context=None):
        return Normal(torch.zeros(M), torch.ones(M))


class _StudentPrior(Prior):
    def __init__(self):
        super().__init__(M)

    def forward(self, context=None):
        return Independent(StudentT(torch.full((M,), 5.0), torch.zeros(M), torch.ones(M)), 1)


# ------------------------------------------------------------- data the likelihood does not define
def test_evaluation_refuses_data_outside_the_likelihoods_support():
    model = _vae()
    raw = torch.randint(0, 17, (6, 1, 4, 4))  # integer pixels 0..16 given to a Bernoulli likelihood
    with pytest.raises(DataError, match=r"scores 0 or 1 in each entry.*values in \[0, 16\]"):
        evaluate(model, raw, iw_samples=2)
    with pytest.raises(DataError, match="0 or 1"):  # every evaluator, by position or keyword
        importance_sampled_log_likelihood(model, x=raw.float(), k=2)
    with pytest.raises(DataError, match="not all whole numbers"):
        evaluate(model, torch.full((2, 1, 4, 4), 0.5), iw_samples=2)
    report = evaluate(model, _binary(), iw_samples=2)  # the data it defines pass
    assert report.nll > 0


def test_a_categorical_likelihood_takes_its_levels_and_missing_entries_are_not_looked_at():
    model = _vae(head=CategoricalHead(5))
    ok = torch.randint(0, 5, (4, 1, 4, 4))
    model.check_data(ok)
    with pytest.raises(DataError, match=r"the integers 0\.\.4.*\[5, 5\]"):
        model.check_data(torch.full((4, 1, 4, 4), 5))
    holes = ok.float()
    holes[0, 0, 0, 0] = float("nan")
    model.check_data(holes)
    _vae(head=GaussianHead()).check_data(torch.randn(4, 1, 4, 4))  # a density: any real value


def test_infinite_entries_no_datapoints_and_bad_evaluation_settings_are_refused_not_scored():
    """A density's support (the real line) let +-inf through: log p(x) came back NaN, or an
    error blamed the model. Data of no datapoint crashed inside torch.cat or a reshape. A negative
    k was taken as 0, a NaN log_volume made every number NaN."""
    from dgmkit.evaluation import estimate, log_likelihoods, posterior_statistics
    from dgmkit.objectives.miwae import impute

    gaussian = _vae(head=GaussianHead())
    x = torch.randn(3, 1, 4, 4)
    x[1, 0, 2, 3] = -math.inf
    for call in (
        lambda: gaussian.check_data(x),
        lambda: evaluate(gaussian, x, iw_samples=2),
        lambda: importance_sampled_log_likelihood(gaussian, x, k=2),
        lambda: impute(gaussian, x, k=2),
    ):
        with pytest.raises(DataError, match=r"1 infinite entries \(inf or -inf\), e.g. in datapoint 1"):
            call()
    model, none = _vae(), _binary()[:0]
    for fn in (log_likelihoods, estimate, importance_sampled_log_likelihood, posterior_statistics, impute, evaluate):
        with pytest.raises(DataError, match=r"^\w+\(\) needs at least one datapoint, got none"):  # (its own or estimate's)
            fn(model, none)
    with pytest.raises(ValueError, match="k .* must be an integer >= 0 .* got -3"):
        evaluate(model, _binary(), iw_samples=-3)
    with pytest.raises(ValueError, match="log_volume .* must be finite, got nan"):
        evaluate(model, _binary(), log_volume=math.nan)
    assert evaluate(model, _binary(), iw_samples=0).estimate == "bound"  # 0: the ELBO, as said


def test_the_trainer_refuses_a_transform_whose_output_the_likelihood_does_not_define():
    raw = Split(torch.randint(0, 17, (32, 1, 4, 4)))
    with pytest.raises(DataError, match="0 or 1"):
        Trainer(_vae(), ELBO(1), raw, DataTransform("integers", 17), epochs=1, device="cpu", progress=False)
    # the validation split as well: levels 0..4 by the transform, and the likelihood takes 0..2
    train, valid = Split(torch.randint(0, 3, (32, 1, 4, 4))), Split(torch.randint(0, 5, (8, 1, 4, 4)))
    model = _vae(head=CategoricalHead(3))
    with pytest.raises(DataError, match=r"the integers 0\.\.2.*\[0, 4\]"):
        Trainer(model, ELBO(1), train, DataTransform("integers", 5), valid=valid, epochs=1, device="cpu", progress=False)


def test_the_trainer_takes_a_tensor_of_images_and_refuses_other_data_by_name():
    x = _binary(32).to(torch.uint8)
    trainer = Trainer(_vae(), ELBO(1), x, DataTransform("binary", 2), valid=x[:8], epochs=1, device="cpu", progress=False)
    assert trainer.fit()[-1]["epoch"] == 1
    with pytest.raises(TypeError, match="train data: a dgmkit.data.Split or a tensor"):
        Trainer(_vae(), ELBO(1), x.tolist(), DataTransform("binary", 2), device="cpu", progress=False)  # type: ignore[arg-type]


def test_the_trainer_names_a_transform_an_objective_parts_and_data_of_the_wrong_kind():
    """Each failed deep in the Trainer in Python's words: None or "bernoulli" for the transform
    ("'NoneType' object is not callable", at the first batch), a loss function for the objective
    ("'function' object has no attribute 'check_model'"), one part for the list ("'KLWarmup'
    object is not iterable")."""
    from dgmkit.data import Dataset, Split
    from dgmkit.training import KLWarmup

    x, binary = _binary(16), DataTransform("binary", 2)
    train = lambda *a, **k: Trainer(*a, **k, epochs=1, device="cpu", progress=False)  # noqa: E731
    for given, shown in ((None, "None"), ("bernoulli", "'bernoulli'")):
        with pytest.raises(TypeError, match=rf"transform must be a dgmkit.data.DataTransform, got {shown}: make_transform"):
            train(_vae(), ELBO(1), x, given)
    with pytest.raises(TypeError, match=r"objective must be a dgmkit.objectives.Objective .*got function: .*subclass"):
        train(_vae(), lambda model, x, beta=1.0: ELBO(1)(model, x, beta), x, binary)
    with pytest.raises(TypeError, match=r"parts are a list of TrainingParts: parts=\[KLWarmup\(\.\.\.\)\], got one alone"):
        train(_vae(), ELBO(1), x, binary, parts=KLWarmup(1.0, 2))
    with pytest.raises(TypeError, match=r"parts are a list of TrainingParts \(\[\] for none\), got None"):
        train(_vae(), ELBO(1), x, binary, parts=None)  # (was "'NoneType' object is not iterable")
    data = Dataset("own", Split(x), Split(x[:4]), Split(x[:4]), 2)
    for given, hint in (
        (data, r"got Dataset: a Dataset's splits are its train, valid and test \(give dataset.train\)"),
        (x.numpy(), r"got ndarray: torch.as_tensor\(x\) makes a tensor"),
        ((x, torch.zeros(16, dtype=torch.long)), r"got tuple: Split\(x, y\) \(dgmkit.data\) holds images and their labels"),
    ):
        with pytest.raises(TypeError, match=hint):
            train(_vae(), ELBO(1), given, binary)
    assert train(_vae(), ELBO(1), data.train, binary, parts=[KLWarmup(1.0, 2)]).fit()[-1]["beta"] == 0.5


# ------------------------------------------------------------- parts whose shapes do not fit
@pytest.mark.parametrize("batch", [M, 5])  # batch == M: the case that broadcast silently into a (B, B) "ELBO"
def test_a_prior_whose_event_is_not_the_latent_vector_is_named(batch):
    model = _vae(prior=_FactorPrior())
    named = r"the prior _FactorPrior gave p\(z\) of batch shape \(3,\) and event shape \(\); .*Independent"
    with pytest.raises(ValueError, match=named):
        ELBO(1)(model, _binary(batch))
    with pytest.raises(ValueError, match=named):
        IWAE(4)(model, _binary(batch))
    with pytest.raises(ValueError, match=named):
        model.sample(2)


@pytest.mark.parametrize("size", [M - 1, M + 1])
def test_a_prior_over_another_number_of_dimensions_or_a_batch_of_priors_is_named(size):
    class Sized(Prior):
        def __init__(self):
            super().__init__(M)

        def forward(self, context=None):
            return Independent(Normal(torch.zeros(size), torch.ones(size)), 1)

    with pytest.raises(ValueError, match=rf"gave p\(z\) of batch shape \(\) and event shape \({size},\); .* \({M},\)"):
        ELBO(1)(_vae(prior=Sized()), _binary())

    class Batched(Sized):  # (1, M): model.sample(n) gave (n, 1, *event)
        def forward(self, context=None):
            return Independent(Normal(torch.zeros(1, M), torch.ones(1, M)), 1)

    with pytest.raises(ValueError, match=r"gave p\(z\) of batch shape \(1,\) and event shape \(3,\)"):
        _vae(prior=Batched()).sample(2)


def test_a_prior_takes_a_numpy_integer_as_its_latent_dim():
    assert type(StandardNormalPrior(np.int64(M)).latent_dim) is int
    with pytest.raises(TypeError, match="latent_dim must be an integer, got float 3.0"):
        StandardNormalPrior(3.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [M, 5])
def test_an_encoder_whose_posterior_is_not_one_distribution_over_the_latent_vector_is_named(batch):
    class FactorEncoder(GaussianEncoder):  # q(z|x) as a Normal whose event is one dimension
        def forward(self, x):
            q = super().forward(x)
            return Normal(q.mean, q.stddev)

    model = _vae()
    model.encoder = FactorEncoder(nn.Sequential(nn.Flatten(), MLP(16, [8], 2 * M)), M)
    with pytest.raises(
        ValueError, match=rf"q\(z\|x\) of batch shape \({batch}, {M}\) and event shape \(\) for data.*Independent\(d, 1\)"
    ):
        ELBO(1)(model, _binary(batch))
    model.encoder = GaussianEncoder(nn.Linear(4, 2 * M), M)  # no nn.Flatten: a (B, 1, 4, 2M) output
    with pytest.raises(ValueError, match=rf"batch shape \({batch}, 1, 4\) and event shape \({M},\) .*nn.Flatten"):
        ELBO(1)(model, _binary(batch))


def test_a_closed_form_kl_that_is_not_one_value_a_datapoint_is_named():
    class Unchecked(VAE):  # a model of one's own whose parts are not checked where they meet
        def posterior(self, x):
            q = super().posterior(x)
            return Normal(q.mean, q.stddev)

        def prior(self):
            return Normal(torch.zeros(M), torch.ones(M))

    model = _vae()
    model = Unchecked(model.encoder, model.decoder, model.prior_module)
    with pytest.raises(ValueError, match=r"KL\(q\(z\|x\) \|\| p\(z\)\), in closed form, has shape \(6, 3\)"):
        ELBO(1)(model, _binary())


def test_a_likelihood_whose_event_is_not_the_image_is_named():
    class RowHead(BernoulliHead):  # Bernoulli pixels whose event is one row of the image
        def forward(self, params):
            d = super().forward(params)
            return Independent(torch.distributions.Bernoulli(logits=d.logits), 1)

    with pytest.raises(ValueError, match=r"log p\(x\|z\), the likelihood's log_prob, has shape \(1, 4, 1, 4\)"):
        ELBO(1)(_vae(head=RowHead()), _binary(4))


def test_a_head_that_returns_a_tensor_for_a_distribution_is_named():
    """A head of one's own returning the pixels' probabilities themselves failed in the objective,
    with "'Tensor' object has no attribute 'log_prob'"."""

    class ProbabilityHead(BernoulliHead):
        def forward(self, params):
            return torch.sigmoid(params.squeeze(-3))

    said = r"head ProbabilityHead returned a tensor of shape \(1, 6, 1, 4, 4\), not a distribution"
    with pytest.raises(TypeError, match=said):
        ELBO(1)(_vae(head=ProbabilityHead()), _binary())
    with pytest.raises(TypeError, match=said):
        evaluate(_vae(head=ProbabilityHead()), _binary(), iw_samples=2)


def test_networks_of_the_wrong_width_and_priors_of_the_wrong_size_are_named():
    with pytest.raises(ValueError, match=r"encoder network gave 3 numbers .* needs 2 \* 3 = 6"):
        ELBO(1)(_vae(enc_out=M), _binary())
    with pytest.raises(ValueError, match=r"decoder network gave output of shape \(6, 8\).* = 16 numbers per latent"):
        ELBO(1)(_vae(dec_out=8), _binary())
    with pytest.raises(ValueError, match=r"q\(z\|x\) is over 3 latent dimensions and the prior's p\(z\) over 2"):
        _vae(prior=StandardNormalPrior(2))

    class Dimensionless(Prior):
        def forward(self, context=None):
            return Independent(Normal(torch.zeros(M), torch.ones(M)), 1)

    with pytest.raises(ValueError, match=r"Dimensionless sets no latent_dim .*Prior.__init__\(latent_dim\)"):
        _vae(prior=Dimensionless())
    with pytest.raises(TypeError, match="must be a dgmkit.priors.Prior"):
        _vae(prior=nn.Identity())  # type: ignore[arg-type]


def test_a_decoder_that_is_not_a_decoder_is_named_where_the_model_is_built():
    """A network that returns p(x|z) itself says neither the data's shape nor their support: it
    was taken, and the first Trainer or evaluation failed with "'VAE' object has no attribute
    'data_support'" (the property's AttributeError, swallowed by nn.Module)."""
    from dgmkit.models import Autoencoder, WassersteinAutoencoder

    class OwnDecoder(nn.Module):
        def forward(self, z):
            return Independent(torch.distributions.Bernoulli(logits=z.new_zeros(*z.shape[:-1], 1, 4, 4)), 3)

    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), MLP(16, [8], 2 * M)), M)
    said = r"the decoder must be a dgmkit.conditional.Decoder, got OwnDecoder: wrap the network as Decoder\(net, head"
    with pytest.raises(TypeError, match=said):
        VAE(encoder, OwnDecoder(), StandardNormalPrior(M))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=said):
        Autoencoder(nn.Flatten(), OwnDecoder(), M)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=said):
        WassersteinAutoencoder(nn.Flatten(), OwnDecoder(), StandardNormalPrior(M))  # type: ignore[arg-type]
    decoder = _vae().decoder

    class Wrapped(nn.Module):  # a wrapper that holds a decoder's head and event shape is one
        def __init__(self):
            super().__init__()
            self.inner, self.head, self.event_shape = decoder, decoder.head, decoder.event_shape

        def forward(self, z):
            return self.inner(z)

    for taken in (Wrapped(), torch.compile(decoder)):  # (compiled at its first call: not here)
        assert VAE(encoder, taken, StandardNormalPrior(M)).event_shape == (1, 4, 4)  # type: ignore[arg-type]


def test_a_head_that_says_it_is_discrete_gets_bits_per_dim_without_naming_levels():
    """A head of one's own with ``discrete = True`` and no ``num_levels`` (a binomial count): its
    log_prob is a probability, so evaluation gives bits/dim as it stands; a density head (the
    Gaussian) gets none where no bins are named."""
    from dgmkit.conditional import LikelihoodHead

    class BinomialHead(LikelihoodHead):
        discrete = True

        def forward(self, params):
            return Independent(torch.distributions.Binomial(16, logits=params[..., 0, :, :]), 3)

    x = torch.randint(0, 17, (6, 1, 4, 4)).float()
    counts = evaluate(_vae(head=BinomialHead()), x, iw_samples=4)
    assert counts.density_of == "discrete" and counts.bpd == pytest.approx(counts.nll / (16 * math.log(2)))
    density = evaluate(_vae(head=GaussianHead()), x / 16, iw_samples=4)
    assert density.density_of == "continuous" and density.bpd is None


def test_a_head_of_ones_own_that_factorizes_scores_the_observed_entries_of_incomplete_data():
    """Any Independent of a distribution of single values factorizes over the entries: a missing
    one (NaN) is left out of log p(x|z) (it was refused as 'not factorized' unless Normal or
    Student's t)."""
    from dgmkit.conditional import LikelihoodHead
    from dgmkit.distributions import observed_log_prob

    class LaplaceHead(LikelihoodHead):
        params_per_pixel, discrete = 2, False

        def forward(self, params):
            loc, raw = params.unbind(-3)
            return Independent(torch.distributions.Laplace(loc, torch.nn.functional.softplus(raw) + 1e-3), 3)

    px = LaplaceHead()(torch.randn(2, 1, 2, 4, 4, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x[0, 0, 1, 2] = x[1, 0, 3, 3] = float("nan")
    seen = ~torch.isnan(x)
    want = torch.where(seen, px.base_dist.log_prob(x.nan_to_num(0.0)), torch.tensor(0.0)).flatten(1).sum(-1)
    assert torch.equal(observed_log_prob(px, x), want) and want.isfinite().all()
    report = evaluate(_vae(head=LaplaceHead()), x, iw_samples=4)
    assert math.isfinite(report.nll) and report.density_of == "continuous"

    loc = torch.zeros(2, 1, 4, 4, requires_grad=True)  # a base whose support leaves 0 out: a missing entry not at 0
    for checked in (True, False):
        positive = Independent(torch.distributions.LogNormal(loc, 1.0, validate_args=checked), 3)
        got = observed_log_prob(positive, x.exp())
        got.sum().backward()
        want = torch.where(seen, torch.distributions.LogNormal(0.0, 1.0).log_prob(x.exp().nan_to_num(1.0)), 0.0)
        assert torch.allclose(got, want.flatten(1).sum(-1)) and loc.grad is not None and loc.grad.isfinite().all()

    class RowsHead(LaplaceHead):  # a distribution over rows of pixels: it does not factorize over them
        def forward(self, params):
            loc = params[..., 0, :, :]
            return Independent(torch.distributions.MultivariateNormal(loc, torch.eye(4)), 2)

    with pytest.raises(
        ValueError, match=r"p\(x\|z\) is a Independent\(MultivariateNormal\) over its base's event shape \(4,\)"
    ):
        observed_log_prob(RowsHead()(torch.zeros(2, 1, 2, 4, 4)), x)


def test_free_bits_name_the_distributions_without_a_per_dimension_kl():
    model = _vae(prior=_StudentPrior())
    with pytest.raises(ValueError, match=r"closed form.*Independent\((Precise)?Normal\) and Independent\(StudentT\)"):
        ELBO(1, free_bits=0.1)(model, _binary())
    assert ELBO(1)(model, _binary()).elbo.shape == (6,)  # (without free bits the KL is estimated)


def test_an_evaluation_checks_its_data_once_not_in_every_evaluation_it_calls(monkeypatch):
    """dgm eval's evaluate calls estimate, the importance sampler and the diagnostics, each an
    evaluation function of the same data: one pass over them is the check."""
    from dgmkit.models.base import GenerativeModel

    calls = []
    check = GenerativeModel.check_data
    monkeypatch.setattr(GenerativeModel, "check_data", lambda self, x: calls.append(len(x)) or check(self, x))
    evaluate(_vae(), _binary(), iw_samples=2)
    assert calls == [6]
    importance_sampled_log_likelihood(_vae(), _binary(), k=2)  # a new evaluation checks again
    assert calls == [6, 6]


def test_an_encoder_that_does_not_say_its_size_is_named_when_its_latents_reach_the_decoder():
    """q(z|x) over 2 dimensions from an encoder without latent_dim, a prior over 3: named where
    q(z|x) is made and at p(x|z), not a bare 'mat1 and mat2 shapes cannot be multiplied' from
    inside the decoder."""

    class Unsized(nn.Module):
        def forward(self, x):
            return Independent(Normal(x.flatten(1)[:, :2], torch.ones(len(x), 2)), 1)

    model = VAE(Unsized(), _vae().decoder, StandardNormalPrior(M))
    with pytest.raises(
        ValueError, match=r"q\(z\|x\) of batch shape \(6,\) and event shape \(2,\).*as many latent dimensions"
    ):
        ELBO(1)(model, _binary())
    with pytest.raises(ValueError, match=r"p\(x\|z\) was given latents of 2 dimensions, and the prior's p\(z\) is over 3"):
        model.likelihood(torch.zeros(6, 2))


def test_evaluation_takes_tensors_of_the_models_event_shape_in_the_models_precision():
    """A NumPy array reached `x.to` inside evaluate (AttributeError), flat rows given to an image
    model an IndexError in the likelihood, float64 data (or a model made float64) a dtype mismatch
    in the first layer: the array and the shape are refused in words, and floating-point data are
    scored in the model's own precision."""
    model, x = _vae(), _binary()
    with pytest.raises(DataError, match=r"evaluate\(\) takes the data as a torch tensor \(N, \*event\), got ndarray"):
        evaluate(model, x.numpy(), iw_samples=2)
    with pytest.raises(DataError, match=r"data of shape \(6, 16\); the model's datapoints are of shape \(1, 4, 4\)"):
        evaluate(model, x.flatten(1), iw_samples=2)
    with pytest.raises(DataError, match=r"a batch is \(B, 1, 4, 4\)"):
        importance_sampled_log_likelihood(model, x=x[:, 0], k=2)
    single = evaluate(model, x, iw_samples=4, seed=1)
    assert evaluate(model, x.double(), iw_samples=4, seed=1).nll == single.nll  # 0/1 values: the same data
    model.double()  # float32 data, as the transforms make them, to a float64 model: as float64 data
    assert evaluate(model, x, iw_samples=4, seed=1).nll == evaluate(model, x.double(), iw_samples=4, seed=1).nll


@pytest.mark.parametrize("family", ["ae", "wae", "vqvae", "diffusion", "dvae", "helmholtz"])
def test_a_model_made_float64_scores_the_transforms_float32_data(family):
    """model.double() (for a more precise evaluation) failed in the first layer: these families
    cast their input with .float() (an autoencoder's and a WAE's code with it, the discrete VAE's
    posterior logits, the Helmholtz machine's recognition input), and masked diffusion fed float32
    times to a float64 network. Other families already took it."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.data import load_dataset

    cfg = RunConfig.of(model=family, **({"process": "masked", "unet_channels": [8, 16]} if family == "diffusion" else {}))
    data = load_dataset("digits")
    x = cfg.model.transform(data)(data.test.x[:6])
    torch.manual_seed(0)
    model = build_model(cfg, data.event_shape, data.num_levels).double()
    report = evaluate(model, x, iw_samples=2, batch_size=6)
    assert report.n == 6 and (report.nll is None or math.isfinite(report.nll))
    assert math.isfinite(report.recon if report.nll is None else report.nll)


@pytest.mark.parametrize("family", ["vae", "m2", "loglinear"])
def test_a_model_made_float64_scores_integer_data_as_their_values(family):
    """Integer data (0/1 as long) to a float64 model: cast to float32 inside (a dtype error in the
    first layer); now the model's precision, the same numbers as the data given as floats."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.data import load_dataset

    name = "digits-4x4" if family == "loglinear" else "digits"
    cfg = RunConfig.of(model=family, dataset=name)
    data = load_dataset(name)
    x = cfg.model.transform(data)(data.test.x[:6], torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model(cfg, data.event_shape, data.num_levels).double()
    as_long = evaluate(model, x.long(), iw_samples=4, seed=1, batch_size=6).nll
    assert as_long == evaluate(model, x.double(), iw_samples=4, seed=1, batch_size=6).nll and math.isfinite(as_long)


@pytest.mark.parametrize(
    "family, settings",
    [
        ("vae", {}),
        ("hvae", {}),
        ("hvae", {"posterior": "residual", "res_resolutions": [4, 8]}),
        ("m2", {}),
        ("adgm", {}),
        ("pixelvae", {}),
    ],
)
def test_the_objective_and_the_reconstruction_take_data_of_another_float_precision_in_the_models(family, settings):
    """float64 (or float16) data given to a float32 model's objective, posterior or reconstruction
    (``ELBO(1)(model, x.double())``) failed in its first layer, "mat1 and mat2 must have the same
    dtype": these families cast integers to the model's precision and left floats of another
    precision as they were (evaluate and the Trainer cast them, a call of the parts did not)."""
    from dgmkit.config import RunConfig, build_model, build_objective
    from dgmkit.data import load_dataset

    cfg = RunConfig.of(model=family, **settings)
    data = load_dataset("digits")
    x = cfg.model.transform(data)(data.test.x[:4], torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model, objective = build_model(cfg, data.event_shape, data.num_levels), build_objective(cfg)
    for other in (x.double(), x.half()):
        torch.manual_seed(1)
        want = objective(model, x).loss
        torch.manual_seed(1)
        got = objective(model, other).loss
        assert got.dtype == torch.float32 and torch.allclose(got, want)
        if model.reconstructs:
            assert torch.equal(model.reconstruct(other), model.reconstruct(x))


def test_a_model_made_float64_trains_on_the_transforms_float32_batches():
    """The Trainer gives batches, validation data and its probe in the model's precision (a
    float64 model met 'mat1 and mat2 must have the same dtype' in its first layer)."""
    model = _vae().double()
    x = _binary(24)
    history = Trainer(
        model, ELBO(1), x, DataTransform("binary", 2), valid=x[:8], epochs=2, batch_size=8, device="cpu", progress=False
    ).fit()
    assert len(history) == 2 and all(math.isfinite(h["valid_elbo"]) for h in history)
    assert next(model.parameters()).dtype == torch.float64


def test_the_trainer_refuses_an_objective_class_given_for_an_instance_by_name():
    """Trainer(model, ELBO, ...) failed in check_model: "missing 1 required positional argument: 'model'"."""
    with pytest.raises(TypeError, match=r"^the objective is the class ELBO; give an instance of it, ELBO\(\.\.\.\)$"):
        Trainer(_vae(), ELBO, _binary(), DataTransform("binary", 2), device="cpu", progress=False)  # type: ignore[arg-type]


def test_the_trainer_refuses_an_objective_for_another_kind_of_model_by_name():
    from dgmkit.objectives import MaximumLikelihood, ReinforceELBO

    for objective, kind in ((ReinforceELBO(), "CategoricalVAE"), (MaximumLikelihood(), "ExactLikelihoodModel")):
        with pytest.raises(TypeError, match=rf"{type(objective).__name__} trains a {kind} .*, and the model is a VAE"):
            Trainer(_vae(), objective, _binary(), DataTransform("binary", 2), device="cpu", progress=False)
    from typing import Protocol

    class Scores(Protocol):  # a kind of model isinstance cannot test: not checked
        def score(self, x): ...

    class OwnObjective(ELBO, Objective[Scores]):  # type: ignore[misc]
        pass

    assert OwnObjective.model_type is LatentVariableModel  # (ELBO's kind, inherited)
    compiled = torch.compile(_vae())  # (the module it compiles is what is checked)
    Trainer(compiled, ELBO(1), _binary(), DataTransform("binary", 2), device="cpu", progress=False)  # type: ignore[arg-type]


def test_an_objective_called_directly_refuses_another_kind_of_model_by_name():
    """Called from Python (not by a Trainer, which asks first), an ELBO of a flow met "'FlowModel'
    object has no attribute 'posterior'" and M2's objective of a VAE "no attribute 'enumerate'"."""
    from dgmkit.models import FlowModel
    from dgmkit.objectives import M2Objective, MaximumLikelihood
    from dgmkit.transforms import maf

    flow = FlowModel(maf(16, [8], layers=1), event_shape=(1, 4, 4), flatten=True)
    x = _binary()[:4]
    for objective, model, says in (
        (ELBO(), flow, "ELBO trains a LatentVariableModel .*, and the model is a FlowModel"),
        (M2Objective(), _vae(), "M2Objective trains a SemiSupervisedVAE .*, and the model is a VAE"),
        (MaximumLikelihood(), _vae(), "MaximumLikelihood trains a ExactLikelihoodModel .*, and the model is a VAE"),
    ):
        with pytest.raises(TypeError, match=says):
            objective(model, x)
    assert ELBO()(_vae(), x).loss.shape == (4,)


def test_a_decoder_of_no_image_shape_a_decoder_without_parameters_and_no_data_are_named():
    with pytest.raises(ValueError, match=r"a Decoder's event_shape is an image's \(C, H, W\), .*got \(16,\)"):
        Decoder(MLP(M, [8], 16), BernoulliHead(), (16,))
    with pytest.raises(ValueError, match=r"got \(1, 0, 4\)"):
        Decoder(MLP(M, [8], 16), BernoulliHead(), (1, 0, 4))
    assert Decoder(MLP(M, [8], 16), BernoulliHead(), tuple(np.array([1, 4, 4]))).event_shape == (1, 4, 4)
    fixed = VAE(_vae().encoder, Decoder(nn.Flatten(), BernoulliHead(), (1, 1, M)), StandardNormalPrior(M))
    assert fixed.sample(2)[0].shape == (2, 1, 1, M)  # (a decoder that holds no parameters: a bare StopIteration)
    with pytest.raises(DataError, match="evaluate\\(\\) needs at least one datapoint, got none"):
        evaluate(_vae(), _binary()[:0])


def test_flat_rows_given_to_an_image_model_are_named_where_they_reach_the_encoder():
    with pytest.raises(ValueError, match=r"q\(z\|x\) was given data of shape \(6, 16\); .* \(1, 4, 4\)"):
        ELBO(1)(_vae(), _binary().view(6, 16))
    with pytest.raises(
        ValueError, match=r"data of shape \(1, 4, 4\); .*\(B, 1, 4, 4\) \(one datapoint is a batch of one: x\.unsqueeze"
    ):
        _vae().posterior(_binary()[0])  # one image without its batch dimension
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\)$"):  # (no such hint for other shapes)
        _vae().posterior(_binary()[:, 0])
    # a NumPy array met "'numpy.ndarray' object has no attribute 'dim'" (model.reconstruct(x) as well)
    with pytest.raises(TypeError, match=r"^q\(z\|x\) takes the data as a torch tensor \(B, 1, 4, 4\), got ndarray"):
        _vae().reconstruct(_binary().numpy())


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: __import__("dgmkit.objectives.importance", fromlist=["x"]).iwae_bound(_vae(), _binary(), 0), "k, the"),
        (lambda: __import__("dgmkit.objectives.importance", fromlist=["x"]).iwae_bound(_vae(), _binary(), 2.5), "k, the"),
        (lambda: evaluate(_vae(), _binary(), iw_samples=4, seed=1.5), "seed must be an integer"),
        (lambda: evaluate(_vae(), _binary(), iw_samples=4, orders=1.5), "orders must be an integer"),
        (lambda: evaluate(_vae(), _binary(), iw_samples=4, continuous="no"), "continuous must be True, False or None"),
        (lambda: __import__("dgmkit.training.schedules", fromlist=["x"]).LRSchedule("exponential", 0.5, 2.5), "every"),
        (lambda: __import__("dgmkit.training.schedules", fromlist=["x"]).LRSchedule("exponential", 0.5, True), "every"),
    ],
)
def test_counts_of_the_building_blocks_are_whole_numbers_named_where_they_enter(call, needle):
    """A float, a bool or a string where a count belongs: taken as another count (every = 2.5 halved
    the rate at epochs 3 and 5, continuous = "no" was true and left bits/dim out) or refused by
    torch from deep inside (k = 0, seed = 1.5), never by its own name."""
    with pytest.raises(ValueError, match=needle):
        call()


def test_masked_diffusion_and_coupling_sizes_are_whole_numbers():
    """MaskedDiffusion took 2.5 levels and 3.7 steps as 2 and 3; a coupling took context_features
    of -1 (then asked for a context) or "3"."""
    from dgmkit.models.diffusion import MaskedDiffusion
    from dgmkit.transforms.coupling import AffineCoupling

    for levels, steps, needle in ((2.5, 0, "num_levels"), (3, 3.7, "steps"), (1, 0, "num_levels"), (3, -1, "steps")):
        with pytest.raises(ValueError, match=needle):
            MaskedDiffusion(nn.Identity(), (1, 1, 4), levels, steps)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    for bad in (-1, 2.5, "3", True):
        with pytest.raises(ValueError, match="context_features must be an integer >= 0"):
            AffineCoupling(mask, MLP(2, [4], 4), context_features=bad)
    assert AffineCoupling(mask, MLP(2, [4], 4)).context_features == 0
