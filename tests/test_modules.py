"""nn.Module wrappers: same numbers as the functional form, readable repr, strict options, usable in training."""

import pytest
import torch

import pairloss

from .backend_cases import SPECS, make_case, split_case
from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")

# module class, functional name, non-default options
MODULES = [
    (pairloss.MultiSimilarityLoss, "multi_similarity_loss", {"alpha": 3.0, "beta": 40.0, "epsilon": 0.2}),
    (pairloss.MultiSimilarityLoss, "multi_similarity_loss", {"mining": False, "reduction": "none"}),
    (pairloss.TripletMarginLoss, "triplet_margin_loss", {"margin": 0.3, "mining": "all"}),
    (pairloss.TripletMarginLoss, "triplet_margin_loss", {"soft": True, "reduction": "sum"}),
    (pairloss.ContrastiveLoss, "contrastive_loss", {"pos_margin": 0.1, "neg_margin": 0.8}),
    (pairloss.CircleLoss, "circle_loss", {"m": 0.25, "gamma": 64.0}),
    (pairloss.NTXentLoss, "ntxent_loss", {"temperature": 0.2}),
    (pairloss.SupConLoss, "supcon_loss", {"temperature": 0.3, "reduction": "none"}),
    (pairloss.ClipLoss, "clip_loss", {"reduction": "sum"}),
    (pairloss.SigLipLoss, "siglip_loss", {}),
    (pairloss.DecoupledSoftmaxLoss, "decoupled_softmax_loss", {"temperature": 0.1}),
    (pairloss.UniformityLoss, "uniformity_loss", {"t": 1.5}),
    (pairloss.MWLoss, "mw_loss", {"temperature": 0.5}),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(MODULES)]


def _arguments(loss_name, scenario):
    tensors, _, _ = split_case(loss_name, make_case(loss_name, scenario, dtype=torch.float64))
    names = SPECS[loss_name].tensors
    args = [tensors[n] for n in names]
    while args and args[-1] is None:  # ref_emb/ref_labels left out
        args.pop()
    return args


@pytest.mark.parametrize("cls,loss_name,options", MODULES, ids=IDS)
def test_module_equals_functional(cls, loss_name, options):
    module = cls(**options, backend="reference")
    for scenario in ("odd", "odd_ref") if loss_name.endswith(("similarity_loss", "margin_loss")) else ("odd",):
        args = _arguments(loss_name, scenario)
        expected = getattr(pairloss, loss_name)(*args, backend="reference", **options)
        assert_close(module(*args), expected)


@pytest.mark.parametrize("cls,loss_name,options", MODULES, ids=IDS)
def test_module_repr_shows_options(cls, loss_name, options):
    text = repr(cls(**options))
    assert text.startswith(cls.__name__ + "(")
    for key, value in options.items():
        assert f"{key}={value!r}" in text
    assert repr(cls()) == f"{cls.__name__}()"


@pytest.mark.parametrize(
    "cls,typo",
    [
        (pairloss.MultiSimilarityLoss, "alhpa"),
        (pairloss.TripletMarginLoss, "margn"),
        (pairloss.ContrastiveLoss, "margin"),
        (pairloss.CircleLoss, "gama"),
        (pairloss.NTXentLoss, "temp"),
        (pairloss.SupConLoss, "tau"),
        (pairloss.ClipLoss, "scale"),
        (pairloss.SigLipLoss, "reduction"),
        (pairloss.DecoupledSoftmaxLoss, "temprature"),
        (pairloss.UniformityLoss, "T"),
        (pairloss.MWLoss, "tau"),
    ],
)
def test_misspelled_option_raises_type_error(cls, typo):
    with pytest.raises(TypeError, match=typo):
        cls(**{typo: 1.0})


def test_module_options_are_validated_at_call():
    module = pairloss.NTXentLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        module(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))


def _batch(generator, loss_name, encoder_in=6):
    rows = 12
    x = torch.randn(rows, encoder_in, generator=generator)
    labels = torch.arange(rows) % 3
    if loss_name in ("clip_loss", "siglip_loss", "mw_loss"):
        return [x, torch.randn(rows, encoder_in, generator=generator)]
    if loss_name == "decoupled_softmax_loss":
        return [x, torch.randn(rows + 4, encoder_in, generator=generator), (torch.arange(rows) % 7)[:, None]]
    if loss_name == "uniformity_loss":
        return [x]
    return [x, labels]


@pytest.mark.parametrize("cls,loss_name,options", MODULES, ids=IDS)
def test_module_in_a_training_step(cls, loss_name, options):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 5)
    extra = []
    if loss_name == "clip_loss":
        extra = [torch.nn.Parameter(torch.tensor(2.0))]
    if loss_name == "siglip_loss":
        extra = [torch.nn.Parameter(torch.tensor(3.0)), torch.nn.Parameter(torch.tensor(-1.0))]
    criterion = cls(**options)
    optimizer = torch.optim.SGD(list(encoder.parameters()) + extra, lr=0.5)
    before = [p.detach().clone() for p in list(encoder.parameters()) + extra]

    batch = _batch(generator, loss_name)
    if loss_name in ("clip_loss", "siglip_loss"):  # CLIP-style models normalise before the loss
        inputs = [torch.nn.functional.normalize(encoder(t), dim=1) for t in batch] + extra
    elif loss_name in ("mw_loss", "decoupled_softmax_loss"):
        inputs = [encoder(batch[0]), encoder(batch[1])] + batch[2:]
    else:
        inputs = [encoder(batch[0])] + batch[1:]
    loss = criterion(*inputs)
    if loss.dim():
        loss = loss.sum()
    assert torch.isfinite(loss) and float(loss.detach()) != 0.0
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = list(encoder.parameters()) + extra
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after[:2])), "encoder did not change"
    for b, a in zip(before[2:], after[2:]):
        assert not torch.equal(b, a.detach()), "logit scale / bias did not change"


def test_modules_have_no_parameters_and_move_with_to():
    module = pairloss.MultiSimilarityLoss(alpha=2.5)
    assert list(module.parameters()) == []
    assert module.to(torch.float64) is module
