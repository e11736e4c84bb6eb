"""nn.Module wrappers: options at construction, tensors at call, exactly the functional API's keywords."""

import inspect

import torch

from . import functional


class _LossModule(torch.nn.Module):
    _function = None  # set by each subclass

    def __init__(self, **options):
        super().__init__()
        # bind_partial rejects misspelled or positional-only options with the function's own TypeError.
        inspect.signature(self._function).bind_partial(**options)
        self.options = options

    def forward(self, *tensors, **call_options):
        # Per-call keywords (e.g. ``self_offset`` from CrossBatchMemory) add to the constructor's options.
        return type(self)._function(*tensors, **self.options, **call_options)

    def extra_repr(self):
        return ", ".join(f"{name}={value!r}" for name, value in self.options.items())


def _module(function, name):
    doc = f"Module form of :func:`pairloss.{function.__name__}`; keyword options as there.\n\n{function.__doc__}"
    return type(name, (_LossModule,), {"_function": staticmethod(function), "__doc__": doc})


MultiSimilarityLoss = _module(functional.multi_similarity_loss, "MultiSimilarityLoss")
TripletMarginLoss = _module(functional.triplet_margin_loss, "TripletMarginLoss")
ContrastiveLoss = _module(functional.contrastive_loss, "ContrastiveLoss")
CircleLoss = _module(functional.circle_loss, "CircleLoss")
NTXentLoss = _module(functional.ntxent_loss, "NTXentLoss")
SupConLoss = _module(functional.supcon_loss, "SupConLoss")
ClipLoss = _module(functional.clip_loss, "ClipLoss")
SigLipLoss = _module(functional.siglip_loss, "SigLipLoss")
DecoupledSoftmaxLoss = _module(functional.decoupled_softmax_loss, "DecoupledSoftmaxLoss")
UniformityLoss = _module(functional.uniformity_loss, "UniformityLoss")
MWLoss = _module(functional.mw_loss, "MWLoss")
