"""Cross-batch memory (Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020), as PML's
CrossBatchMemory: a ring buffer of past embeddings used as the references of a label loss.

The loss is called with the filled part of the buffer as ``ref_emb`` (a view, no copy) and ``self_offset``
pointing at the anchors' own copies, so the fused engines never concatenate the batch and the memory nor build a
B×M matrix: memory banks of a million rows cost their M×D storage only.
"""

import torch

from . import _checks as checks
from ._labels import is_multi_hot


class CrossBatchMemory(torch.nn.Module):
    """Wrap a pairloss label loss with a memory of the last ``memory_size`` (detached) embeddings and labels.

    ``loss`` is a label loss module or function of pairloss (e.g. ``pairloss.MultiSimilarityLoss()`` or
    ``functools.partial(pairloss.ntxent_loss, temperature=0.1)``); it is called as
    ``loss(embeddings, labels, ref_emb=memory_embeddings, ref_labels=memory_labels, self_offset=...)``. Labels are
    class ids or multi-hot (B, L) bool rows; the memory takes the form of the first batch it stores (until
    ``reset_queue``).

    Same semantics as PML's CrossBatchMemory: each batch is enqueued before the loss is computed, only the filled
    part of the memory is used, and each anchor's own copy in the memory is left out of its pairs. With
    ``enqueue_mask`` (MoCo-style), the masked rows are only enqueued and the other rows are the anchors (their own
    copies are not in the memory). One difference: pairloss leaves the own copy out before mining, PML after; the
    two differ only for an anchor whose sole positive in the memory is its own copy.
    """

    def __init__(self, loss, embedding_size, memory_size=1024):
        super().__init__()
        checks.check_positive_int(embedding_size=embedding_size, memory_size=memory_size)
        self.loss = loss
        self.embedding_size = embedding_size
        self.memory_size = memory_size
        self.register_buffer("embedding_memory", torch.zeros(memory_size, embedding_size))
        self.register_buffer("label_memory", torch.zeros(memory_size, dtype=torch.int64))
        self.reset_queue()

    @torch.no_grad()
    def reset_queue(self):
        """Empty the memory: the buffers are zeroed, as PML does (they keep their storage, device and dtype)."""
        self.embedding_memory.zero_()
        self.label_memory.zero_()
        self.queue_idx = 0  # where the next row goes
        self.has_been_filled = False

    def get_extra_state(self):
        return {"queue_idx": self.queue_idx, "has_been_filled": self.has_been_filled}

    def set_extra_state(self, state):
        self.queue_idx, self.has_been_filled = state["queue_idx"], state["has_been_filled"]

    def forward(self, embeddings, labels, enqueue_mask=None):
        checks.check_embeddings("embeddings", embeddings)
        checks.check_class_labels("labels", labels, embeddings.shape[0], "embeddings")
        checks.check_same_device(embeddings=embeddings, labels=labels, enqueue_mask=enqueue_mask)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings has {embeddings.shape[1]} features but the memory holds {self.embedding_size}"
            )
        if enqueue_mask is None:
            queued, queued_labels = embeddings, labels
        else:
            self._check_enqueue_mask(enqueue_mask, embeddings.shape[0])
            queued, queued_labels = embeddings[enqueue_mask], labels[enqueue_mask]
            embeddings, labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
        if queued.shape[0] > self.memory_size:
            raise ValueError(
                f"{queued.shape[0]} rows to enqueue but memory_size is {self.memory_size}: a batch would overwrite "
                "its own copies"
            )
        start = self._enqueue(queued, queued_labels)
        filled = self.memory_size if self.has_been_filled else self.queue_idx
        if embeddings.shape[0] == 0 or filled == 0:  # no anchor (every row only enqueued) or an empty memory
            return embeddings.sum() * 0 + queued.sum() * 0
        self_offset = start if enqueue_mask is None else None
        return self._loss(embeddings, labels, self.embedding_memory[:filled], self.label_memory[:filled], self_offset)

    def _loss(self, embeddings, labels, ref_emb, ref_labels, self_offset):
        return self.loss(embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels, self_offset=self_offset)

    @staticmethod
    def _check_enqueue_mask(enqueue_mask, rows):
        if not isinstance(enqueue_mask, torch.Tensor) or enqueue_mask.dtype != torch.bool:
            raise TypeError(f"enqueue_mask must be a bool tensor, got {getattr(enqueue_mask, 'dtype', enqueue_mask)}")
        if enqueue_mask.shape != (rows,):
            raise ValueError(f"enqueue_mask must have shape ({rows},) like the batch, got {tuple(enqueue_mask.shape)}")

    @torch.no_grad()
    def _enqueue(self, embeddings, labels):
        """Write the rows at the queue position (wrapping around); returns the row where the first one went."""
        if self.embedding_memory.device != embeddings.device or self.embedding_memory.dtype != embeddings.dtype:
            self.embedding_memory = self.embedding_memory.to(embeddings.device, embeddings.dtype)
            self.label_memory = self.label_memory.to(embeddings.device)
        self._hold_labels_like(labels)
        start, count = self.queue_idx, embeddings.shape[0]
        slots = torch.arange(start, start + count, device=embeddings.device) % self.memory_size
        self.embedding_memory[slots] = embeddings.detach()
        self.label_memory[slots] = labels.to(self.label_memory.dtype)
        self.queue_idx = (start + count) % self.memory_size
        if count > 0 and self.queue_idx <= start:
            self.has_been_filled = True
        return start

    def _hold_labels_like(self, labels):
        """Label slots of the batch's form: class ids (int64) or multi-hot rows of its L labels (bool); an empty
        memory switches form, a filled one only after ``reset_queue``."""
        shape, dtype = (self.memory_size, *labels.shape[1:]), torch.bool if is_multi_hot(labels) else torch.int64
        if self.label_memory.shape == shape and self.label_memory.dtype == dtype:
            return
        if self.queue_idx or self.has_been_filled:
            raise ValueError(
                f"labels are {_label_form(labels)} but the memory holds {_label_form(self.label_memory)}: call "
                "reset_queue() to change form"
            )
        self.label_memory = torch.zeros(shape, dtype=dtype, device=labels.device)

    def extra_repr(self):
        return f"embedding_size={self.embedding_size}, memory_size={self.memory_size}"


def _label_form(labels):
    return f"multi-hot rows of {labels.shape[1]} labels" if labels.dim() == 2 else "class ids"
