"""The whole trainable network: front end -> normalization -> CRNN.

Training runs `forward(audio)`; export traces `forward_spectrum` and `step_spectrum`, the
same network starting at the STFT spectrum that the engine computes on the host. The
feature normalization statistics (from the training split only) are buffers, so they
travel inside the checkpoint and the exported graphs.
"""

from __future__ import annotations

import torch
from torch import nn

from seld.arrays import Array
from seld.features import FeatureConfig, make_front_end
from seld.model import CRNN, ModelConfig


class SeldNetwork(nn.Module):
    def __init__(self, features: FeatureConfig, model: ModelConfig, array: Array):
        super().__init__()
        self.front_end = make_front_end(features, array)
        if (self.front_end.feature_channels, self.front_end.bins) != (model.input_channels, model.input_bins):
            raise ValueError(f"the front end gives {self.front_end.feature_channels} x {self.front_end.bins} features, "
                             f"the model takes {model.input_channels} x {model.input_bins}")
        self.crnn = CRNN(model)
        self.array = array
        shape = (model.input_channels, model.input_bins)
        self.register_buffer("normalization_mean", torch.zeros(shape))
        self.register_buffer("normalization_std", torch.ones(shape))

    @property
    def num_channels(self) -> int:
        return self.front_end.num_channels

    @property
    def causal(self) -> bool:
        return self.crnn.config.causal

    @property
    def state_size(self) -> int:
        return self.crnn.state_size

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.crnn.initial_state(batch, self.normalization_mean.device)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.normalization_mean.copy_(mean)
        self.normalization_std.copy_(std)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalized) features [batch, channels, frames, bins] of audio [batch, channels, samples]."""
        return self.front_end(audio)

    def _normalize(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.normalization_mean[:, None, :]) / self.normalization_std[:, None, :]

    def forward(self, audio: torch.Tensor, augment: bool = False, precomputed: bool = False) -> torch.Tensor:
        """audio [batch, channels, samples] -> outputs [batch, label_frames, output_size].
        With `precomputed`, the input is already the front end's features (a feature cache)."""
        # Features in float32 under mixed precision: spectral power overflows float16 (measured: NaN
        # loss in the first epoch of a CUDA run).
        with torch.autocast(audio.device.type, enabled=False):
            audio = audio.float()
            features = self._normalize(audio if precomputed else self.front_end(audio))
        if augment and self.training:
            features = mask_time_frequency(features)
        return self.crnn(features)

    def forward_spectrum(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return self.crnn(self._normalize(self.front_end.features_from_spectrum(real, imag)))

    def step_spectrum(self, real: torch.Tensor, imag: torch.Tensor, state: torch.Tensor):
        return self.crnn.step(self._normalize(self.front_end.features_from_spectrum(real, imag)), state)


def mask_time_frequency(features: torch.Tensor, time_masks: int = 2, max_frames: int = 10, frequency_masks: int = 2,
                        max_bins: int = 8) -> torch.Tensor:
    """SpecAugment-style masking (to the mean, 0 after normalization), the same bins and frames
    for every feature channel so the spatial features stay consistent with the spectra."""
    batch, _, frames, bins = features.shape
    keep = torch.ones(batch, 1, frames, bins, device=features.device, dtype=features.dtype)
    for count, limit, size, axis in ((time_masks, max_frames, frames, 2), (frequency_masks, max_bins, bins, 3)):
        for _ in range(count):
            width = torch.randint(0, limit + 1, (batch,))
            start = (torch.rand(batch) * (size - width).clamp_min(1)).long()
            for item in range(batch):
                index = [item, slice(None), slice(None), slice(None)]
                index[axis] = slice(int(start[item]), int(start[item] + width[item]))
                keep[tuple(index)] = 0
    return features * keep
