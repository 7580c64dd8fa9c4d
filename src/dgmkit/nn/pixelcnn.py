r"""Gated PixelCNN layers (van den Oord et al. 2016, arXiv 1606.05328) without a blind spot.

Two stacks. The vertical stack v at row r sees only rows strictly above r; the horizontal
stack h at (r, c) sees the pixels of row r strictly left of c and, through v, every row
above. The first layer (mask A) excludes the current pixel; later layers (mask B) include
their input's current position, which by induction holds only earlier pixels. Convolutions are
"shifted" rather than masked, so no weight is wasted on zeros:

    vertical:   kernel (k//2 + 1) x k on rows r - k//2 .. r (first layer: then shifted down)
    horizontal: kernel 1 x (k//2 + 1) on columns c - k//2 .. c (first layer: shifted right)

Each layer has the gated activation tanh(a) * sigmoid(b); v feeds h through a 1x1 convolution;
h has residual connections.

Conditional (van den Oord et al.'s conditional PixelCNN, with a spatial condition): a map s of
``cond_channels`` channels at the image's size (made from a latent z, say) enters every layer's
two pre-activations through a 1x1 convolution. s does not depend on x, so it may be read at
every position, and the network models p(x | s) = prod_d p(x_d | x_<d, s).
"""

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from dgmkit.errors import sizes_at_least

__all__ = ["GatedPixelCNNLayer", "GatedPixelCNNNet", "PixelChooser", "down_shift", "right_shift"]


def down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0))[..., :-1]


def _gate(a: torch.Tensor) -> torch.Tensor:
    t, s = a.chunk(2, dim=1)
    return torch.tanh(t) * torch.sigmoid(s)


class GatedPixelCNNLayer(nn.Module):
    def __init__(self, in_channels: int, channels: int, kernel: int, first: bool, cond_channels: int = 0):
        super().__init__()
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError(f"kernel must be odd and >= 3, got {kernel}")
        self.k, self.first = kernel // 2, first
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.k + 1, kernel))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.k + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1) if cond_channels else None

    def condition(self, s: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The condition map's terms (B, 2p, H, W) in the vertical and the horizontal pre-activation."""
        if s is None:
            return None, None
        if self.cond is None:
            raise ValueError("this layer was built without a condition (cond_channels = 0)")
        v, h = self.cond(s).chunk(2, dim=1)
        return v, h

    def vertical(self, v: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activation of the vertical stack (B, 2p, H, W) from the layer input (and the
        condition's term for the same rows)."""
        a = self.v_conv(F.pad(v, (self.k, self.k, self.k, 0)))
        a = down_shift(a) if self.first else a
        return a if cond is None else a + cond

    def horizontal(self, h: torch.Tensor, v_pre: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's h output from its h input, this layer's vertical pre-activation (and the
        condition's term); works on any run of whole rows (or a row cropped at its right end)."""
        a = self.h_conv(F.pad(h, (self.k, 0, 0, 0)))
        if self.first:
            a = right_shift(a)
        a = a + self.v_to_h(v_pre)
        out = self.h_out(_gate(a if cond is None else a + cond))
        return out if self.first else h + out

    def horizontal_at(
        self,
        window: torch.Tensor,
        h_here: torch.Tensor | None,
        v_col: torch.Tensor,
        c: int,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layer's h output at one column c, (B, p, 1, 1), from the k + 1 input columns that
        end at c (first layer: at c - 1), left-padded with zeros, v's pre-activation (and the
        condition's term) at c. Equal to ``horizontal(...)[..., c]`` at a cost independent of
        the width."""
        if self.first and c == 0:  # the right shift puts zero pre-activation at column 0
            a = torch.zeros_like(v_col)
        else:
            a = self.h_conv(window)
        a = a + self.v_to_h(v_col)
        out = self.h_out(_gate(a if cond is None else a + cond))
        return out if self.first else h_here + out


# choose(t, params) -> the values (B,) of the t-th generated pixel, from its head parameters (B, P)
PixelChooser = Callable[[int, torch.Tensor], torch.Tensor]
Terms = list[torch.Tensor | None]


class GatedPixelCNNNet(nn.Module):
    """x (B, C, H, W) -> per-pixel outputs (B, out_channels, H, W), autoregressive in raster order;
    with ``cond_channels``, every output also sees a condition map s (B, cond_channels, H, W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        layers: int = 6,
        kernel: int = 3,
        cond_channels: int = 0,
    ):
        super().__init__()
        sizes: dict[str, object] = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "channels": channels,
            "layers": layers,
        }
        sizes_at_least("GatedPixelCNNNet", sizes)  # (else torch's words on a weight of size 0, or a head on x itself)
        self.layers = nn.ModuleList(
            GatedPixelCNNLayer(in_channels if i == 0 else channels, channels, kernel, i == 0, cond_channels)
            for i in range(layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, out_channels, 1)
        )

    @property
    def stack(self) -> list[GatedPixelCNNLayer]:
        """The layers, input side first."""
        return cast("list[GatedPixelCNNLayer]", list(self.layers))

    def condition(self, s: torch.Tensor | None, x: torch.Tensor | None = None) -> tuple[Terms, Terms]:
        """Each layer's vertical and horizontal condition terms (None for no condition). A conditional
        net refuses no s (it scored p(x) without the condition, silently), and one of another shape
        than (B, cond_channels, H, W) of the images x (torch's words on a size or a weight)."""
        cond = self.stack[0].cond
        if s is None and cond is not None:
            raise ValueError("this GatedPixelCNNNet is conditional: pass a condition map s")
        if s is not None and cond is not None and x is not None:
            want = (x.shape[0], cond.in_channels, *x.shape[2:])
            if s.shape != want:
                raise ValueError(f"the condition map s must be (B, cond_channels, H, W) = {want}, got {tuple(s.shape)}")
        terms = [layer.condition(s) for layer in self.stack]
        return [v for v, _ in terms], [h for _, h in terms]

    def vertical_stack(self, x: torch.Tensor, cond_v: Terms | None = None, last_row: bool = False) -> list[torch.Tensor]:
        """Every layer's vertical pre-activation; row r depends on rows < r of x only (and on the
        condition terms ``cond_v`` of the same rows). ``last_row``: each layer's last row alone, a
        copy, so that no layer's pre-activation on the other rows outlives its gate."""
        out, v = [], x
        for i, layer in enumerate(self.stack):
            a = layer.vertical(v, None if cond_v is None else cond_v[i])
            out.append(a[:, :, -1:].clone() if last_row else a)
            v = _gate(a)
        return out

    def horizontal_stack(self, x: torch.Tensor, v_pre: list[torch.Tensor], cond_h: Terms | None = None) -> torch.Tensor:
        h = x
        for i, (layer, a) in enumerate(zip(self.stack, v_pre)):
            h = layer.horizontal(h, a, None if cond_h is None else cond_h[i])
        return h

    def forward(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        cond_v, cond_h = self.condition(s, x)
        return self.head(self.horizontal_stack(x, self.vertical_stack(x, cond_v), cond_h))

    def horizontal_column(
        self, rows: list[torch.Tensor], v_pre: list[torch.Tensor], c: int, cond_h: Terms | None = None
    ) -> torch.Tensor:
        """The head's output at column c of one row, (B, out), computing each layer at c only.

        ``rows[0]`` is the input row (B, C, 1, W) with columns < c set; ``rows[l]`` (l >= 1)
        holds layer l's h outputs at earlier columns, and this call writes column c of each.
        ``cond_h``: each layer's horizontal condition term on this row, (B, 2p, 1, W)."""
        for i, (layer, a) in enumerate(zip(self.stack, v_pre)):
            k = layer.k
            end = c if layer.first else c + 1  # exclusive end of the window
            src = rows[i]
            window = src[..., max(0, end - k - 1) : end]
            if window.shape[-1] < k + 1:
                window = F.pad(window, (k + 1 - window.shape[-1], 0))
            h_here = None if layer.first else src[..., c : c + 1]
            term = None if cond_h is None or cond_h[i] is None else cond_h[i][..., c : c + 1]  # type: ignore[index]
            rows[i + 1][..., c : c + 1] = layer.horizontal_at(window, h_here, a[..., c : c + 1], c, term)
        return self.head(rows[-1][..., c : c + 1]).flatten(1)

    def _row_pre_activations(
        self, out: list[torch.Tensor], x: torch.Tensor, cond_v: Terms | None, top: int, pass_images: int
    ) -> None:
        """Into ``out`` (each layer's (B, 2p, 1, W)), each layer's vertical pre-activation on the last
        of the rows x (B, C, R, W), which start at row ``top`` of the image (and of the condition
        terms), from ``pass_images`` images at a time."""
        r = top + x.shape[2]
        for i in range(0, len(x), pass_images):
            rows_v = None if cond_v is None else [None if t is None else t[i : i + pass_images, :, top:r] for t in cond_v]
            for held, a in zip(out, self.vertical_stack(x[i : i + pass_images], rows_v, last_row=True)):
                held[i : i + pass_images] = a

    @torch.no_grad()
    def generate(
        self,
        x: torch.Tensor,
        choose: PixelChooser,
        input_scale: float = 1.0,
        s: torch.Tensor | None = None,
        cached: bool = True,
        pass_images: int | None = None,
    ) -> torch.Tensor:
        """Fill the single-channel images x (B, 1, H, W) pixel by pixel in raster order, pixel t
        taking ``choose(t, its head outputs)``; returns the chosen values (B, 1, H, W). The
        network reads ``value * input_scale``; ``s``: the condition map.

        Cached: row by row, the vertical stack of row r (which sees rows < r only) once per row
        on the few rows above that it can reach (``pass_images`` images at a time, all if None:
        its memory, unlike the row's cache, is that of the rows it sees); then per pixel, each
        layer's horizontal stack at that pixel alone, from the layer outputs cached for the row.
        Naive: the whole network per pixel. Both give the same values for the same choices."""
        n, _, h, w = x.shape
        if not cached:
            for r in range(h):
                for c in range(w):
                    params = self(x, s)[:, :, r, c]  # (B, P)
                    x[:, 0, r, c] = choose(r * w + c, params).to(x.dtype) * input_scale
            return (x / input_scale).round()
        cond_v, cond_h = self.condition(s, x)
        first = self.stack[0]
        k, ch = first.k, first.h_out.out_channels
        v_pre = [x.new_empty(n, 2 * ch, 1, w) for _ in self.layers]  # (the row's, written over at each row)
        for r in range(h):
            top = max(0, r - len(self.layers) * k - 1)  # rows r's vertical stack can see
            self._row_pre_activations(v_pre, x[:, :, top : r + 1], cond_v, top, pass_images or max(n, 1))  # (n = 0: none)
            row_h = None if s is None else [None if t is None else t[:, :, r : r + 1] for t in cond_h]
            rows = [x[:, :, r : r + 1]] + [x.new_zeros(n, ch, 1, w) for _ in self.layers]
            for c in range(w):
                params = self.horizontal_column(rows, v_pre, c, row_h)  # (B, P)
                x[:, 0, r, c] = choose(r * w + c, params).to(x.dtype) * input_scale
        return (x / input_scale).round()
