"""The CRNN: SELDnet and its successors in one model, causal for streaming.

features [batch, channels, frames, bins]
  -> conv blocks (3x3 conv, batch norm, ReLU, max pooling in time and frequency; the
     time pooling brings 20 ms feature frames down to 100 ms label frames)
  -> GRU (bidirectional: the two directions are merged as tanh(forward) * tanh(backward),
     as SELDnet and the DCASE baselines do)
  -> self-attention blocks (residual + layer norm)
  -> heads: SED (logits) + DOA (tanh), or (multi-)ACCDOA (tanh), each optionally with
     distance (linear, metres); layouts in ``seld.decode``
  -> outputs [batch, label_frames, output_size]

With ``causal=True`` the model only looks at the past: convolutions are padded on the
past side only, time pooling windows are aligned to label frames, the GRU runs forward
only and attention sees a bounded window of past label frames. ``step`` then runs it
on a stream, one chunk (a whole number of label frames) at a time, carrying one flat
state tensor; the whole-sequence ``forward`` is ``step`` from the zero state, so the
two agree to float tolerance by construction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from seld.decode import OUTPUT_FORMATS, OutputLayout


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shape. The defaults are the ``default`` preset."""

    input_channels: int = 7  # feature channels (7: FOA log-mel + intensity vectors)
    input_bins: int = 64  # feature bins (mel bands, or STFT bins)
    conv_filters: tuple[int, ...] = (64, 64, 64)
    conv_kernel: int = 3
    pool_time: tuple[int, ...] = (5, 1, 1)  # per conv block; their product = feature frames per label frame
    pool_freq: tuple[int, ...] = (4, 4, 2)
    gru_size: int = 128
    gru_layers: int = 2
    bidirectional: bool = False
    attention_blocks: int = 2
    attention_heads: int = 8
    attention_window: int = 20  # label frames a position sees, itself included; 0: all (non-causal only)
    head_size: int = 128  # hidden linear layer of each head; 0: none
    output_format: str = "multi_accdoa"
    num_classes: int = 13
    num_tracks: int = 3  # multi_accdoa only
    distance: bool = True
    causal: bool = True
    dropout: float = 0.05

    def __post_init__(self):
        for name in ("conv_filters", "pool_time", "pool_freq"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_filters) == len(self.pool_time) == len(self.pool_freq):
            raise ValueError("conv_filters, pool_time and pool_freq need one entry per conv block")
        small = [f"{name} {value}" for name, value, least in (
            ("input_channels", self.input_channels, 1), ("input_bins", self.input_bins, 1),
            ("conv_kernel", self.conv_kernel, 1), ("gru_size", self.gru_size, 1), ("gru_layers", self.gru_layers, 1),
            ("attention_blocks", self.attention_blocks, 0), ("attention_heads", self.attention_heads, 1),
            ("attention_window", self.attention_window, 0), ("head_size", self.head_size, 0),
            ("num_classes", self.num_classes, 1), ("num_tracks", self.num_tracks, 1),
            *((f"conv_filters[{i}]", v, 1) for i, v in enumerate(self.conv_filters)),
            *((f"pool_time[{i}]", v, 1) for i, v in enumerate(self.pool_time)),
            *((f"pool_freq[{i}]", v, 1) for i, v in enumerate(self.pool_freq))) if value < least]
        if small:
            raise ValueError(f"{', '.join(small)}: too small (sizes and counts are at least 1; attention_blocks, "
                             f"attention_window and head_size at least 0)")
        if not self.conv_kernel % 2:
            raise ValueError(f"conv_kernel {self.conv_kernel}: must be odd (it pads the bins by kernel // 2 each side)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout}: must be in [0, 1)")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, not {self.output_format!r}")
        if self.input_bins // math.prod(self.pool_freq) < 1:
            raise ValueError(f"pool_freq {self.pool_freq} leaves no bins of {self.input_bins}")
        if self.gru_size % max(self.attention_heads, 1):
            raise ValueError("gru_size must be a multiple of attention_heads")
        if self.causal and self.bidirectional:
            raise ValueError("a causal model cannot have a bidirectional GRU")
        if self.causal and self.attention_blocks and self.attention_window < 1:
            raise ValueError("a causal model with attention needs attention_window >= 1")
        if not self.causal and self.attention_window:
            raise ValueError("attention_window is for causal models; set it to 0")

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout.of(self)

    @property
    def feature_frames_per_label(self) -> int:
        return math.prod(self.pool_time)

    def to_dict(self) -> dict:
        """Plain dict (lists, not tuples) for JSON, TOML, checkpoints and seld.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**values)


PRESETS = {
    # Ours: causal, streams 100 ms at a time; multi-ACCDOA with distance.
    "default": ModelConfig(),
    # Adavanne et al. 2018 on STFT magnitude + phase of 4 channels (8 x 513), with the
    # DCASE 2020 time pooling down to 100 ms label frames.
    "seldnet": ModelConfig(
        input_channels=8, input_bins=513, pool_freq=(8, 8, 4), bidirectional=True, attention_blocks=0,
        attention_window=0, output_format="sed_doa", num_tracks=1, distance=False, causal=False, dropout=0.0),
    # The DCASE 2023 task 3 baseline (FOA log-mel + intensity vectors, ~0.74 M parameters).
    "dcase2023": ModelConfig(bidirectional=True, attention_window=0, distance=False, causal=False),
    # For tests: trains in seconds on a CPU.
    "tiny": ModelConfig(
        conv_filters=(8, 8), pool_time=(5, 1), pool_freq=(8, 4), gru_size=16, gru_layers=1,
        attention_blocks=1, attention_heads=2, attention_window=4, head_size=0, dropout=0.0),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A preset's config with some fields replaced, e.g. ``preset("default", input_channels=10)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, pool: tuple[int, int], dropout: float,
                 causal: bool):
        super().__init__()
        self.context, self.causal = kernel - 1, causal  # input frames of the past each output frame needs
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=(0, kernel // 2))
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(pool)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None):
        """x [batch, channels, frames, bins]; past: the ``context`` input frames before x (causal)."""
        if self.causal:
            frames = x.shape[2]
            x = torch.cat([past, x], dim=2)
            past = x[:, :, frames:]
        else:
            x = F.pad(x, (0, 0, self.context // 2, self.context - self.context // 2))
        return self.dropout(self.pool(F.relu(self.norm(self.conv(x))))), past


class SelfAttention(nn.Module):
    """Multi-head self-attention + residual + layer norm (the DCASE baseline's block).

    With a window W (causal), position t attends to positions t-W+1..t that exist: the
    keys and values of the W-1 positions before the input come from ``cache`` and
    ``seen`` (positions seen before the input, clamped to W-1) masks those before the
    stream's start, so a zero cache means "beginning of stream". Up to ``band_frames`` input
    frames, every query scores all W-1+frames keys under a band mask: no gathers or index
    arithmetic, so the streaming graph (a frame or a few per call) is a few nodes. Longer
    inputs gather each query's W keys instead, O(frames * W): a whole recording in
    validation, or the offline graph (exported with ``band_frames = 0``). The same function
    either way.
    """

    band_frames = 32

    def __init__(self, dim: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.heads, self.head_size, self.window = heads, dim // heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [batch, frames, dim] -> [batch, heads, frames, dim/heads]
        return x.unflatten(2, (self.heads, self.head_size)).transpose(1, 2)

    def blocked(self, frames: int, seen: torch.Tensor) -> torch.Tensor:
        """The band path's mask [batch, 1, frames, W-1+frames]: true where query t may not see
        extended position j (0..W-2+frames), outside its window (t <= j <= t+W-1) or before the
        stream's start (seen + j < W-1). Every block of one window shares it: CRNN.step makes it once."""
        j = torch.arange(self.window - 1 + frames, device=seen.device)
        t = torch.arange(frames, device=seen.device).unsqueeze(1)
        outside = (j < t) | (j > t + self.window - 1)  # [frames, W-1+frames]
        return outside | ((seen.reshape(-1, 1, 1, 1) + j.to(seen.dtype)) < self.window - 1)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None, seen: torch.Tensor | None = None,
                blocked: torch.Tensor | None = None):
        """x [batch, frames, dim]; cache [batch, W-1, 2 dim] (keys then values); seen [batch] or
        [batch, 1]; blocked: `blocked(frames, seen)` where the caller has it already."""
        frames, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x)
        query = self._split(qkv[..., :dim]) / math.sqrt(self.head_size)
        if self.window:
            keys_values = torch.cat([cache, qkv[..., dim:]], dim=1)  # W-1 + frames positions
            cache = keys_values[:, frames:]
            key, value = self._split(keys_values[..., :dim]), self._split(keys_values[..., dim:])
            if frames <= self.band_frames:
                blocked = self.blocked(frames, seen) if blocked is None else blocked
                scores = torch.matmul(query, key.transpose(-1, -2)).masked_fill(blocked, float("-inf"))
                attended = torch.matmul(self.dropout(torch.softmax(scores, dim=-1)), value)
            else:  # one gather of the windows: entries t..t+W-1 for query t
                window = (torch.arange(frames, device=x.device).unsqueeze(1)
                          + torch.arange(self.window, device=x.device)).flatten()
                keys = key.index_select(2, window).unflatten(2, (-1, self.window))  # [batch, heads, frames, W, d]
                values = value.index_select(2, window).unflatten(2, (-1, self.window))
                scores = torch.matmul(keys, query.unsqueeze(-1)).squeeze(-1)  # [batch, heads, frames, W]
                position = seen.reshape(-1, 1, 1, 1) + window.reshape(1, 1, -1, self.window).to(seen.dtype)
                scores = scores.masked_fill(position < self.window - 1, float("-inf"))
                weights = self.dropout(torch.softmax(scores, dim=-1))
                attended = torch.matmul(weights.unsqueeze(-2), values).squeeze(-2)
        else:
            key, value = self._split(qkv[..., dim:2 * dim]), self._split(qkv[..., 2 * dim:])
            scores = torch.matmul(query, key.transpose(-1, -2))
            attended = torch.matmul(self.dropout(torch.softmax(scores, dim=-1)), value)
        attended = attended.transpose(1, 2).flatten(2)
        return self.norm(x + self.dropout(self.out(attended))), cache


def _head(dim: int, hidden: int, size: int) -> nn.Module:
    # Linear then linear, no activation between, as SELDnet and the DCASE baselines.
    return nn.Sequential(nn.Linear(dim, hidden), nn.Linear(hidden, size)) if hidden else nn.Linear(dim, size)


class CRNN(nn.Module):
    """See the module docstring. ``forward(features) -> outputs``; causal models also
    ``step(features, state) -> (outputs, state)`` with ``state [batch, state_size]``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        channels, bins = c.input_channels, c.input_bins
        segments = []  # (name, shape per stream) of the streaming state, in order
        self.blocks = nn.ModuleList()
        for index, (filters, pool_time, pool_freq) in enumerate(zip(c.conv_filters, c.pool_time, c.pool_freq)):
            self.blocks.append(
                ConvBlock(channels, filters, c.conv_kernel, (pool_time, pool_freq), c.dropout, c.causal))
            segments.append((f"conv{index}", (channels, c.conv_kernel - 1, bins)))
            channels, bins = filters, bins // pool_freq
        self.gru = nn.GRU(channels * bins, c.gru_size, c.gru_layers, batch_first=True,
                          dropout=c.dropout if c.gru_layers > 1 else 0.0, bidirectional=c.bidirectional)
        segments.append(("gru", (c.gru_layers, c.gru_size)))
        self.attention = nn.ModuleList(SelfAttention(c.gru_size, c.attention_heads, c.attention_window, c.dropout)
                                       for _ in range(c.attention_blocks))
        for index in range(c.attention_blocks):
            segments.append((f"attention{index}", (c.attention_window - 1, 2 * c.gru_size)))
        if c.attention_blocks:
            segments.append(("seen", (1,)))

        layout = c.layout
        classes = c.num_classes
        if c.output_format == "sed_doa":
            self.sed_head = _head(c.gru_size, c.head_size, classes)
            self.doa_head = _head(c.gru_size, c.head_size, layout.axes * classes)
            is_direction = [False] * classes + [True] * 3 * classes + [False] * classes * c.distance
        else:
            self.head = _head(c.gru_size, c.head_size, layout.size)
            is_direction = ([True] * 3 * classes + [False] * classes * c.distance) * layout.tracks
        self.register_buffer("is_direction", torch.tensor(is_direction), persistent=False)

        self.state_layout: list[tuple[str, tuple[int, ...], int, int]] = []
        offset = 0
        for name, shape in segments if c.causal else []:
            self.state_layout.append((name, shape, offset, offset + math.prod(shape)))
            offset += math.prod(shape)
        self.state_size = offset  # per stream; 0 for non-causal models

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """The state at the start of a stream: zeros [batch, state_size]."""
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def output_frames(self, feature_frames: int) -> int:
        return feature_frames // self.config.feature_frames_per_label

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [batch, input_channels, frames, input_bins] -> [batch, frames // 5, output_size].

        Trailing feature frames short of a whole label frame are dropped.
        """
        if self.config.causal:
            state = features.new_zeros(features.shape[0], self.state_size)
            return self.step(features, state)[0]
        self._check(features)
        x = features
        for block in self.blocks:
            x = block(x)[0]
        x = self.gru(x.transpose(1, 2).flatten(2))[0]
        if self.config.bidirectional:
            x = torch.tanh(x[..., :self.config.gru_size]) * torch.tanh(x[..., self.config.gru_size:])
        for block in self.attention:
            x = block(x)[0]
        return self._outputs(x)

    def step(self, features: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of a stream: features [batch, channels, 5 n, bins] and the state after the
        previous chunk (zeros at the start) -> (outputs [batch, n, output_size], new state)."""
        if not self.config.causal:
            raise RuntimeError("step() needs a causal model (config.causal=True)")
        self._check(features)
        past = {name: state[:, start:stop].reshape((state.shape[0],) + shape)
                for name, shape, start, stop in self.state_layout}
        new_state = []
        x = features
        for index, block in enumerate(self.blocks):
            x, block_past = block(x, past[f"conv{index}"])
            new_state.append(block_past)
        x, hidden = self.gru(x.transpose(1, 2).flatten(2), past["gru"].transpose(0, 1).contiguous())
        new_state.append(hidden.transpose(0, 1))
        if self.config.attention_blocks:
            seen, frames, first = past["seen"], x.shape[1], self.attention[0]  # seen [batch, 1]
            blocked = first.blocked(frames, seen) if frames <= first.band_frames else None
            for index, block in enumerate(self.attention):
                x, cache = block(x, past[f"attention{index}"], seen, blocked)
                new_state.append(cache)
            new_state.append(torch.clamp(seen + frames, max=self.config.attention_window - 1))
        return self._outputs(x), torch.cat([part.flatten(1) for part in new_state], dim=1)

    def _check(self, features: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        c = self.config
        if features.ndim != 4 or features.shape[1] != c.input_channels or features.shape[3] != c.input_bins:
            raise ValueError(f"features must be [batch, {c.input_channels}, frames, {c.input_bins}], "
                             f"got {list(features.shape)}")

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.output_format == "sed_doa":
            y = torch.cat([self.sed_head(x), self.doa_head(x)], dim=-1)
        else:
            y = self.head(x)
        return torch.where(self.is_direction, torch.tanh(y), y)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
