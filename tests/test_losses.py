import numpy as np
import pytest
import torch

from seld.decode import OutputLayout
from seld.losses import SeldLoss, accdoa_loss, adpit_loss, sed_doa_loss
from seld.targets import LabelEvent, encode_targets, reference_outputs

CLASSES = 3


def tensor(array):
    return torch.as_tensor(np.asarray(array, dtype=np.float32))[None]  # add the batch axis


def multi_events():
    return [
        LabelEvent(0, 0, 0, 30.0, 0.0, 1.0),  # one source
        LabelEvent(1, 1, 0, 30.0, 0.0, 1.0), LabelEvent(1, 1, 1, -90.0, 20.0, 2.0),  # two of one class
        LabelEvent(2, 2, 0, 0.0, 0.0, 1.0), LabelEvent(2, 2, 1, 120.0, 0.0, 2.0),  # three of one class
        LabelEvent(2, 2, 2, -120.0, 0.0, 3.0),
    ]


def tracks_of(outputs, layout):
    return outputs.reshape(len(outputs), layout.tracks, layout.axes, layout.num_classes)


def test_adpit_is_zero_for_every_valid_arrangement_and_positive_otherwise():
    layout = OutputLayout("multi_accdoa", CLASSES, 3, distance=True)
    targets = encode_targets(multi_events(), 3, layout)
    canonical = tracks_of(reference_outputs(targets, layout), layout)
    loss = SeldLoss(layout)
    assert loss(tensor(canonical.reshape(3, -1)), tensor(targets)).item() == pytest.approx(0, abs=1e-7)

    arranged = canonical.copy()
    arranged[1, :, :, 1] = canonical[1, [2, 0, 0], :, 1]  # B1 B0 B0: another valid arrangement
    arranged[2, :, :, 2] = canonical[2, [2, 0, 1], :, 2]  # C2 C0 C1
    assert loss(tensor(arranged.reshape(3, -1)), tensor(targets)).item() == pytest.approx(0, abs=1e-7)

    wrong = canonical.copy()
    wrong[2, :, :, 2] = canonical[2, [0, 0, 1], :, 2]  # a source missing
    assert loss(tensor(wrong.reshape(3, -1)), tensor(targets)).item() > 1e-3
    wrong = canonical.copy()
    wrong[1, :, :, 1] = canonical[1, [1, 1, 1], :, 1]  # one of two sources on every track
    assert loss(tensor(wrong.reshape(3, -1)), tensor(targets)).item() > 1e-3
    wrong = canonical.copy()
    wrong[0, 1, 3, 0] += 0.5  # a wrong distance only
    error = loss(tensor(wrong.reshape(3, -1)), tensor(targets)).item()
    assert error == pytest.approx(0.25 / (3 * 4) / (3 * CLASSES))
    assert SeldLoss(layout, distance_weight=2.0)(tensor(wrong.reshape(3, -1)), tensor(targets)).item() == \
        pytest.approx(2 * error)


def baseline_adpit(output, target):
    """The DCASE baseline's MSELoss_ADPIT written out: 13 candidates, each padded with the
    other groups' first arrangement."""
    a0, b0, b1, c0, c1, c2 = (target[:, :, i, :1] * target[:, :, i, 1:] for i in range(6))
    cat = lambda *parts: torch.cat(parts, dim=2)  # noqa: E731
    pad_a, pad_b, pad_c = cat(b0, b0, b1) + cat(c0, c1, c2), cat(a0, a0, a0) + cat(c0, c1, c2), \
        cat(a0, a0, a0) + cat(b0, b0, b1)
    candidates = [cat(a0, a0, a0) + pad_a]
    candidates += [cat(*p) + pad_b for p in [(b0, b0, b1), (b0, b1, b0), (b0, b1, b1), (b1, b0, b0), (b1, b0, b1),
                                             (b1, b1, b0)]]
    candidates += [cat(*p) + pad_c for p in [(c0, c1, c2), (c0, c2, c1), (c1, c0, c2), (c1, c2, c0), (c2, c0, c1),
                                             (c2, c1, c0)]]
    output = output.reshape(output.shape[0], output.shape[1], candidates[0].shape[2], candidates[0].shape[3])
    losses = torch.stack([((output - c) ** 2).mean(dim=2) for c in candidates])
    return losses.min(dim=0).values.mean()


@pytest.mark.parametrize("distance", [False, True])
def test_adpit_equals_the_baselines_formula(distance):
    generator = torch.Generator().manual_seed(0)
    axes = 4 if distance else 3
    targets = torch.zeros(2, 5, 6, 1 + axes, CLASSES)
    for b in range(2):
        for t in range(5):
            for c in range(CLASSES):
                group = int(torch.randint(0, 4, (1,), generator=generator))
                for slot in {1: [0], 2: [1, 2], 3: [3, 4, 5]}.get(group, []):
                    targets[b, t, slot, 0, c] = 1
                    targets[b, t, slot, 1:, c] = torch.randn(axes, generator=generator)
    outputs = torch.randn(2, 5, 3 * axes * CLASSES, generator=generator)
    ours = adpit_loss(outputs, targets, CLASSES, 3, distance)
    assert ours.item() == pytest.approx(baseline_adpit(outputs, targets).item(), rel=1e-6)


def test_adpit_gradient_flows_to_outputs():
    layout = OutputLayout("multi_accdoa", CLASSES, 3)
    targets = tensor(encode_targets(multi_events(), 3, layout))
    outputs = torch.zeros(1, 3, layout.size, requires_grad=True)
    adpit_loss(outputs, targets, CLASSES).backward()
    assert outputs.grad.abs().sum() > 0


def test_sed_doa_masks_direction_of_inactive_classes():
    layout = OutputLayout("sed_doa", CLASSES, distance=True)
    events = [LabelEvent(0, 1, 0, 45.0, 0.0, 2.0)]
    targets = tensor(encode_targets(events, 2, layout))
    perfect = tensor(reference_outputs(encode_targets(events, 2, layout), layout, logit=30.0))
    assert sed_doa_loss(perfect, targets, CLASSES, True).item() == pytest.approx(0, abs=1e-6)
    noisy = perfect.clone()
    noisy[0, :, CLASSES:].view(2, 4, CLASSES)[:, :, [0, 2]] = 0.7  # directions of inactive classes: ignored
    assert sed_doa_loss(noisy, targets, CLASSES, True).item() == pytest.approx(0, abs=1e-6)
    wrong = perfect.clone()
    wrong[0, 0, CLASSES + 1] = 0.0  # x of the active class
    assert sed_doa_loss(wrong, targets, CLASSES, True).item() > 0.01
    assert sed_doa_loss(wrong, targets, CLASSES, True, doa_weight=10).item() > \
        5 * sed_doa_loss(wrong, targets, CLASSES, True).item()
    missed = perfect.clone()
    missed[0, 0, 1] = -30.0  # the active class's logit
    assert sed_doa_loss(missed, targets, CLASSES, True).item() > 1.0


def test_accdoa_is_mse_of_activity_scaled_vectors():
    layout = OutputLayout("accdoa", CLASSES, distance=True)
    targets = tensor(encode_targets([LabelEvent(0, 2, 0, 0.0, 0.0, 1.0)], 1, layout))
    assert accdoa_loss(targets.clone(), targets, CLASSES, True).item() == 0
    off = targets.clone()
    off[0, 0, 2] = 0.0  # x of class 2: 1 -> 0
    assert accdoa_loss(off, targets, CLASSES, True).item() == pytest.approx(1 / (4 * CLASSES))
    assert SeldLoss(layout)(off, targets).item() == pytest.approx(1 / (4 * CLASSES))
