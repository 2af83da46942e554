"""The parts every module shares: ELBOTask (hyperparameters, warm-up, epoch statistics, eval mode), the latent's
PosteriorSample (the estimator behind every model's surrogate) and the prior's device and dtype."""

from __future__ import annotations

import pytest
import torch

from hsvae.latents import GaussianLatent, PosteriorSample, VonMisesFisherLatent
from hsvae.models import M2
from hsvae.training import ELBOTask, M2Module
from hsvae.training.epoch_means import EpochMeans
from hsvae.utils.modules import evaluating


def test_surrogate_keeps_the_value_and_adds_the_score_gradient():
    """surrogate(f) = f + f.detach() * score: the value is f's, the gradient f's plus f times the score's."""
    theta = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    f = theta ** 2
    score = theta.sin() - theta.sin().detach()  # zero-valued, gradient cos(theta)
    out = PosteriorSample(torch.zeros(3, 2), score).surrogate(f)
    torch.testing.assert_close(out, f)
    (grad,) = torch.autograd.grad(out.sum(), theta)
    torch.testing.assert_close(grad, 2 * theta.detach() + (theta ** 2 * theta.cos()).detach())


def test_surrogate_of_a_reduced_objective_uses_the_per_draw_parts():
    """A scalar loss whose draw i contributes per_draw[i]: the score term is sum_i per_draw_i * grad score_i."""
    theta = torch.tensor([0.5, 1.5], requires_grad=True)
    per_draw = torch.tensor([2.0, -3.0])
    score = theta.exp() - theta.exp().detach()
    value = (theta * 0).sum() + 7.0
    out = PosteriorSample(torch.zeros(2, 3), score).surrogate(value, per_draw)
    assert out.shape == () and out.item() == pytest.approx(7.0)
    (grad,) = torch.autograd.grad(out, theta)
    torch.testing.assert_close(grad, per_draw * theta.detach().exp())


def test_reparameterised_draws_have_no_score():
    q = GaussianLatent(3).posterior(torch.randn(4, 6))
    sample = GaussianLatent(3).rsample(q, (2,))
    assert sample.score is None and not sample.needs_per_draw_terms and sample.z.shape == (2, 4, 3)
    f = torch.randn(2, 4)
    assert sample.surrogate(f) is f
    corrected = VonMisesFisherLatent(3, grad_correction=True)
    draw = corrected.rsample(corrected.posterior(torch.randn(4, 5)))
    assert draw.needs_per_draw_terms and draw.score.shape == (4,) and torch.all(draw.score == 0)
    plain = VonMisesFisherLatent(3)
    assert plain.rsample(plain.posterior(torch.randn(4, 5))).score is None


def test_prior_follows_the_module_dtype_and_a_given_tensor():
    latent = GaussianLatent(2)
    assert latent.prior().sample((3,)).dtype == torch.float32
    assert latent.double().prior().sample((3,)).dtype == torch.float64
    assert latent.prior(torch.zeros(1, dtype=torch.float16)).loc.dtype == torch.float16
    assert "_anchor" not in latent.state_dict()  # checkpoints are unchanged


def test_evaluating_restores_the_mode_also_after_an_error():
    net = torch.nn.Dropout(0.5).train()
    with evaluating(net):
        assert not net.training and not torch.is_grad_enabled()
    assert net.training
    with pytest.raises(RuntimeError), evaluating(net):
        raise RuntimeError("a failing plot")
    assert net.training and torch.is_grad_enabled()
    net.eval()
    with evaluating(net):
        pass
    assert not net.training


def _m2_module(**kwargs) -> M2Module:
    return M2Module(M2(GaussianLatent(2), GaussianLatent(2), hidden=[8]),
                    optimizer=lambda params: torch.optim.SGD(params, lr=0.1), **kwargs)


def test_hyperparameters_are_the_subclass_arguments():
    module = _m2_module(alpha=0.3, warmup_epochs=2.0)
    assert dict(module.hparams) == {"alpha": 0.3, "labelled_weight": None, "warmup_epochs": 2.0}
    assert isinstance(module, ELBOTask) and module.monitor == "val/accuracy"


def test_warmup_rises_linearly_to_final_beta():
    module = _m2_module(warmup_epochs=4.0)
    assert [module.beta(b) for b in range(3)] == [0.0, 0.25, 0.5]  # without a trainer: one batch per epoch
    assert _m2_module().beta(0) == 1.0
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        _m2_module(warmup_epochs=-1.0)


def test_scheduler_steps_on_the_monitor():
    module = _m2_module()
    module.scheduler_factory = lambda optimizer: torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    assert module.configure_optimizers()["lr_scheduler"]["monitor"] == "val/accuracy"


def test_epoch_means_are_weighted_and_refuse_other_names():
    means = EpochMeans()
    means.add({"a": torch.tensor(1.0), "b": torch.tensor(4.0)}, weight=1)
    means.add({"a": torch.tensor(3.0), "b": torch.tensor(0.0)}, weight=3)
    result = means.means()
    assert result["a"].item() == pytest.approx(2.5) and result["b"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ"):
        means.add({"b": torch.tensor(0.0), "a": torch.tensor(0.0)})
    means.reset()
    assert means.means() == {}
