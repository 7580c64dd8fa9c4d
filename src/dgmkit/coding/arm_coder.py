r"""Entropy coding of images with an autoregressive model's conditionals.

Encoder and decoder run the same sequential loop (the model's cached generation path) on the
same batches, so both see bit-identical probabilities p(x_d | x_<d) on the same machine and
software: the encoder feeds the known pixel at each step, the decoder the one it just
decoded. The range coder (queue: first in, first out) spends -log2 p(x_d | x_<d) bits per
pixel plus a small constant per batch, so the rate approaches the model's NLL.
"""

import numpy as np
import torch

from dgmkit.models.autoregressive import AutoregressiveModel

__all__ = ["encode_images", "decode_images"]


def _coder():
    try:
        import constriction
    except ImportError:  # pragma: no cover - a dependency
        raise ImportError("compression needs the constriction package: pip install constriction") from None
    return constriction.stream


def _probabilities(log_pmf: torch.Tensor) -> np.ndarray:
    return log_pmf.double().exp().cpu().numpy()


@torch.no_grad()
def encode_images(model: AutoregressiveModel, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Compress integer images (N, 1, H, W) to range-coder words (uint32)."""
    stream = _coder()
    family = stream.model.Categorical(perfect=False)
    encoder = stream.queue.RangeEncoder()
    order = model.order().tolist()
    model.eval()
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].flatten(1).long()

        def choose(t: int, log_pmf: torch.Tensor, xb: torch.Tensor = xb) -> torch.Tensor:
            values = xb[:, order[t]]
            encoder.encode(values.numpy().astype(np.int32), family, _probabilities(log_pmf))
            return values

        model.run_cached(len(xb), choose)
    return encoder.get_compressed()


@torch.no_grad()
def decode_images(model: AutoregressiveModel, words: np.ndarray, n: int, batch_size: int = 500) -> torch.Tensor:
    """Invert ``encode_images``: n images (N, 1, H, W) as int64."""
    stream = _coder()
    family = stream.model.Categorical(perfect=False)
    decoder = stream.queue.RangeDecoder(words)
    model.eval()
    out = []
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)

        def choose(t: int, log_pmf: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(decoder.decode(family, _probabilities(log_pmf)).astype(np.int64))

        out.append(model.run_cached(nb, choose).round().long())
    return torch.cat(out) if out else torch.zeros(0, *model.event_shape, dtype=torch.long)
