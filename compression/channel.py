"""The codec between ComCNN and RecCNN, and how the ComCNN's gradient crosses it.

Gradient modes (``training.gradient_mode``):
- ``identity``: the paper's choice; the codec is treated as perfect and the decoder sees the compact image.
- ``straight-through``: forward uses the real decoded file, backward passes the gradient through unchanged.
- ``proxy``: a differentiable JPEG (8x8 DCT, quality tables, soft rounding) stands in for the codec.
In every mode the compact image is clamped and rounded to 8 bits exactly as it will be stored; the rounding
passes gradients straight through, the clamp does not (the range penalty in the trainer covers the excess).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .codecs import BatchRoundTrip, Codec, RoundTripJob, batch_from_uint8, batch_to_uint8
from .jpeg_proxy import JpegProxy
from .resample import quantize_8bit

GRADIENT_MODES = ("identity", "straight-through", "proxy")


def stored_values(compact: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits; rounding is straight-through, the clamp is not."""
    clamped = compact.clamp(0.0, 1.0)
    return clamped + (quantize_8bit(clamped) - clamped).detach()


class CodecChannel:
    def __init__(self, codec: Codec, gradient_mode: str, subsampling: str = "4:2:0", threads: int = 0):
        if gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient mode {gradient_mode!r}; choose one of {GRADIENT_MODES}")
        self.codec = codec
        self.gradient_mode = gradient_mode
        self.round_trip = BatchRoundTrip(codec, threads)
        self.proxy = JpegProxy(subsampling, tables=codec.tables, max_quantizer=codec.max_quantizer)

    @torch.no_grad()
    def real(self, compact: torch.Tensor, qualities: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """What the decoder really receives: the decoded file, and the file sizes in bytes."""
        return self.receive(self.submit(compact, qualities), compact.device)

    @torch.no_grad()
    def submit(self, compact: torch.Tensor, qualities: Sequence[int]) -> RoundTripJob:
        """Start the real round trip of a compact batch: its 8-bit values cross to the host once, as uint8,
        and the codec threads work while the caller goes on (:meth:`receive` waits for them)."""
        return self.round_trip.submit(batch_to_uint8(compact).cpu().numpy(), qualities)

    @staticmethod
    def receive(job: RoundTripJob, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """The decoded batch of a :meth:`submit`, float on ``device`` (converted there), and file sizes."""
        decoded, sizes = job.result()
        return batch_from_uint8(torch.from_numpy(decoded), device), sizes

    def needs_real_decode(self) -> bool:
        return self.gradient_mode == "straight-through"

    def differentiable(
        self,
        compact: torch.Tensor,
        qualities: Sequence[int],
        real_decoded: torch.Tensor | None = None,
        with_rate: bool = False,
        base_tables: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """The decoded image as the ComCNN's loss sees it, with a gradient back to ``compact``, and (with
        ``with_rate``) the JPEG rate proxy's estimates per image (:class:`JpegProxy`: ``bits``, ``bpp`` per
        compact pixel, ``scan_bits``). The proxy runs once at most, with ``base_tables`` (learned, with a
        gradient) in place of the codec's when given.
        """
        stored = stored_values(compact)
        proxy = None
        if self.gradient_mode == "proxy" or with_rate:
            proxy = self.proxy(stored, self.quality_tensor(qualities, compact.device), base_tables)
        rate = proxy if with_rate else None
        if self.gradient_mode == "identity":
            return stored, rate
        if self.gradient_mode == "straight-through":
            if real_decoded is None:
                raise ValueError("straight-through needs the real decoded batch")
            return stored + (real_decoded.to(stored.dtype) - stored).detach(), rate
        return proxy["x_hat"], rate

    @staticmethod
    def quality_tensor(qualities: Sequence[int], device: torch.device) -> torch.Tensor:
        return torch.as_tensor(list(qualities), dtype=torch.long, device=device)

    def close(self) -> None:
        self.round_trip.close()
