"""Training losses for each output format; targets come from ``seld.targets``.

- ``sed_doa``: binary cross-entropy on the activity logits + MSE of the direction
  (and distance) masked to active classes (SELDnet).
- ``accdoa``: MSE of the activity-scaled vectors (and distances).
- ``multi_accdoa``: ADPIT, auxiliary duplicating permutation invariant training
  (Shimada et al. 2022; the DCASE 2022-2024 baselines' MSELoss_ADPIT): per frame and
  class, the MSE against the best of every arrangement of the class's sources over
  the output tracks.

``distance_weight`` scales the squared error of the distance values (metres); 1 is
the DCASE 2024 baseline's plain MSE.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from seld.decode import OutputLayout
from seld.targets import adpit_arrangements, adpit_slots


def _axis_weights(distance: bool, distance_weight: float, like: torch.Tensor) -> torch.Tensor:
    return like.new_tensor([1.0, 1.0, 1.0] + ([distance_weight] if distance else []))


def sed_doa_loss(outputs: torch.Tensor, targets: torch.Tensor, num_classes: int, distance: bool = False,
                 doa_weight: float = 1.0, distance_weight: float = 1.0) -> torch.Tensor:
    """outputs and targets [batch, frames, C * (4 or 5)] (``seld.decode`` layout)."""
    activity = targets[..., :num_classes]
    sed = F.binary_cross_entropy_with_logits(outputs[..., :num_classes], activity)
    shape = outputs.shape[:-1] + (-1, num_classes)
    squared = (outputs[..., num_classes:].reshape(shape) - targets[..., num_classes:].reshape(shape)) ** 2
    squared = squared * _axis_weights(distance, distance_weight, outputs)[:, None]
    mask = activity.unsqueeze(-2)  # [batch, frames, 1, classes]
    doa = (squared * mask).sum() / (mask.sum() * squared.shape[-2]).clamp(min=1.0)
    return sed + doa_weight * doa


def accdoa_loss(outputs: torch.Tensor, targets: torch.Tensor, num_classes: int, distance: bool = False,
                distance_weight: float = 1.0) -> torch.Tensor:
    """outputs and targets [batch, frames, C * (3 or 4)]."""
    shape = outputs.shape[:-1] + (-1, num_classes)
    squared = (outputs.reshape(shape) - targets.reshape(shape)) ** 2
    return (squared * _axis_weights(distance, distance_weight, outputs)[:, None]).mean()


def adpit_loss(outputs: torch.Tensor, targets: torch.Tensor, num_classes: int, num_tracks: int = 3,
               distance: bool = False, distance_weight: float = 1.0) -> torch.Tensor:
    """outputs [batch, frames, tracks * axes * C]; targets [batch, frames, slots, 1 + axes, C].

    For a class with k sources in a frame, the candidate targets are every arrangement of
    those k over the tracks (each source on at least one track, ``adpit_arrangements``).
    As in the baseline, a candidate of one group adds the canonical arrangement of the
    other groups (all zero but the active one), so every candidate is a valid target.
    """
    batch, frames = outputs.shape[:2]
    axes = targets.shape[3] - 1
    if targets.shape[2] != adpit_slots(num_tracks):
        raise ValueError(f"targets have {targets.shape[2]} slots, {num_tracks} tracks need {adpit_slots(num_tracks)}")
    slots = targets[:, :, :, :1] * targets[:, :, :, 1:]  # [batch, frames, slots, axes, classes]
    selection = outputs.new_tensor(_selection(num_tracks))  # [candidates, tracks, slots]
    candidates = torch.einsum("kns,btsac->bktnac", selection, slots)
    outputs = outputs.reshape(batch, 1, frames, num_tracks, axes, num_classes)
    weights = _axis_weights(distance, distance_weight, outputs)[:axes, None]
    error = ((outputs - candidates) ** 2 * weights).mean(dim=(3, 4))  # [batch, candidates, frames, classes]
    return error.min(dim=1).values.mean()


@lru_cache(maxsize=None)
def _selection(num_tracks: int) -> list:
    """[candidate][track][slot] = 1 when the candidate puts that slot's values on that track."""
    arrangements = adpit_arrangements(num_tracks)
    canonical = {}
    for k, chosen in arrangements:
        canonical.setdefault(k, chosen)
    selection = [[[0.0] * adpit_slots(num_tracks) for _ in range(num_tracks)] for _ in arrangements]
    for index, (k, chosen) in enumerate(arrangements):
        for other, other_chosen in canonical.items():
            for track, slot in enumerate(chosen if other == k else other_chosen):
                selection[index][track][slot] = 1.0
    return selection


class SeldLoss(nn.Module):
    """The loss for a model's output layout: ``loss(outputs, targets) -> scalar``."""

    def __init__(self, layout: OutputLayout, doa_weight: float = 1.0, distance_weight: float = 1.0):
        super().__init__()
        self.layout, self.doa_weight, self.distance_weight = layout, doa_weight, distance_weight

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        if layout.output_format == "sed_doa":
            return sed_doa_loss(outputs, targets, layout.num_classes, layout.distance, self.doa_weight,
                                self.distance_weight)
        if layout.output_format == "accdoa":
            return accdoa_loss(outputs, targets, layout.num_classes, layout.distance, self.distance_weight)
        return adpit_loss(outputs, targets, layout.num_classes, layout.num_tracks, layout.distance,
                          self.distance_weight)
