import json

import pytest
import torch

from seld.model import CRNN, PRESETS, ModelConfig, count_parameters, preset

torch.set_num_threads(2)


def randomized(config: ModelConfig, seed=0) -> CRNN:
    """A model in eval mode whose batch norm statistics are not the identity."""
    torch.manual_seed(seed)
    model = CRNN(config)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def features(config: ModelConfig, label_frames: int, batch=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    frames = label_frames * config.feature_frames_per_label
    return torch.randn(batch, config.input_channels, frames, config.input_bins, generator=generator)


def stream(model: CRNN, x: torch.Tensor, chunk_labels: int) -> torch.Tensor:
    step = chunk_labels * model.config.feature_frames_per_label
    state = model.initial_state(x.shape[0])
    outputs = []
    for start in range(0, x.shape[2], step):
        out, state = model.step(x[:, :, start:start + step], state)
        assert state.shape == (x.shape[0], model.state_size)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


STREAMING_CONFIGS = {
    "tiny": preset("tiny"),
    "default": preset("default"),
    # Time pooling spread over blocks, a 5x5 kernel, two GRU layers, other heads.
    "spread_sed_doa": preset("tiny", pool_time=(1, 5), conv_kernel=5, gru_layers=2, attention_blocks=2,
                             attention_window=3, output_format="sed_doa", head_size=8, num_classes=4),
    "accdoa_no_attention": preset("tiny", attention_blocks=0, output_format="accdoa", distance=False),
}


@pytest.mark.parametrize("name", list(STREAMING_CONFIGS))
def test_streaming_chunks_equal_whole_sequence(name):
    config = STREAMING_CONFIGS[name]
    model = randomized(config)
    x = features(config, 23)
    with torch.no_grad():
        whole = model(x)
        assert whole.shape == (2, 23, config.layout.size)
        for chunk in (1, 3, 7):
            assert (stream(model, x, chunk) - whole).abs().max().item() <= 1e-4, chunk


def test_causal_outputs_do_not_depend_on_the_future():
    config = preset("tiny")
    model = randomized(config)
    x = features(config, 12)
    changed = x.clone()
    changed[:, :, 30:] = torch.randn_like(changed[:, :, 30:])  # from label frame 6 on
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:])


def test_attention_sees_a_bounded_window_of_the_past():
    from seld.model import SelfAttention

    torch.manual_seed(0)
    block = SelfAttention(dim=8, heads=2, window=4, dropout=0.0).eval()
    x = torch.randn(1, 10, 8)
    changed = x.clone()
    changed[:, :3] = torch.randn(1, 3, 8)  # positions 0..2
    cache, seen = torch.zeros(1, 3, 16), torch.zeros(1)  # [batch, W-1, keys and values]
    with torch.no_grad():
        a, b = block(x, cache, seen)[0], block(changed, cache, seen)[0]
    # Position t sees t-3..t: positions 6 on do not see 0..2, positions 3..5 do.
    assert torch.equal(a[:, 6:], b[:, 6:])
    assert all(not torch.allclose(a[:, t], b[:, t]) for t in range(6))
    # At the stream's start the zero cache is masked: position 0 attends only to itself.
    with torch.no_grad():
        alone = block(x[:, :1], cache, seen)[0]
        garbage = block(x[:, :1], torch.randn(1, 3, 16), seen)[0]
    assert torch.allclose(alone, garbage)


@pytest.mark.parametrize("frames", [1, 3, 25])
def test_attention_band_mask_and_gathered_windows_agree(frames):
    """Short inputs (a stream's chunks) score all cached keys under a band mask, long ones (whole
    recordings, the offline graph) gather each query's window: the same outputs and cache."""
    from seld.model import SelfAttention

    torch.manual_seed(frames)
    block = SelfAttention(dim=16, heads=2, window=6, dropout=0.0).eval()
    x, cache = torch.randn(2, frames, 16), torch.randn(2, 5, 32)
    seen = torch.tensor([0.0, 5.0])  # one stream at its start, one well into it
    with torch.no_grad():
        block.band_frames = frames
        band = block(x, cache, seen)
        block.band_frames = 0
        gathered = block(x, cache, seen)
    assert torch.allclose(band[0], gathered[0], atol=1e-6) and torch.equal(band[1], gathered[1])


def test_state_starts_at_zero_and_carries():
    model = randomized(preset("tiny"))
    state = model.initial_state(3)
    assert state.shape == (3, model.state_size) and not state.any()
    with torch.no_grad():
        _, state = model.step(features(model.config, 2, batch=3), state)
    assert state.abs().sum() > 0
    assert model.state_layout[-1][0] == "seen" and model.state_layout[-1][3] == model.state_size


@pytest.mark.parametrize("name", ["seldnet", "dcase2023"])
def test_non_causal_presets_run_and_cannot_stream(name):
    config = preset(name)
    if name == "seldnet":  # 8 x 513 is slow for a unit test: same model, fewer bins
        config = preset(name, input_bins=64, pool_freq=(4, 4, 2))
    model = randomized(config)
    x = features(config, 4, batch=1)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 4, config.layout.size)
    with pytest.raises(RuntimeError, match="causal"):
        model.step(x, model.initial_state(1))


def test_output_activations():
    config = preset("tiny", output_format="sed_doa", distance=True, num_classes=2)
    model = randomized(config)
    with torch.no_grad():
        for parameter in model.doa_head.parameters():
            parameter.mul_(100.0)
        y = model(features(config, 3))
    directions, distance = y[..., 2:8], y[..., 8:]
    assert directions.abs().max() <= 1.0 and distance.abs().max() > 1.0


def test_presets_and_parameter_counts():
    assert set(PRESETS) == {"default", "seldnet", "dcase2023", "tiny"}
    counts = {name: count_parameters(CRNN(config)) for name, config in PRESETS.items()}
    assert 0.72e6 < counts["dcase2023"] < 0.76e6  # the DCASE 2023 baseline: ~0.74 M
    assert 2e5 < counts["default"] < 1.2e6
    assert counts["tiny"] < 2e4
    dcase = preset("dcase2023")
    assert dcase.layout.size == 3 * 3 * 13 and not dcase.causal and dcase.bidirectional
    default = preset("default")
    assert default.causal and default.distance and default.output_format == "multi_accdoa"
    assert preset("seldnet").output_format == "sed_doa"
    assert preset("default", input_channels=10).input_channels == 10
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")


def test_config_round_trips_through_a_plain_dict():
    config = preset("default", conv_filters=[32, 64, 64])
    assert config.conv_filters == (32, 64, 64)
    values = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(values) == config
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**values, "size": 3})


def test_config_rejects_impossible_models():
    with pytest.raises(ValueError, match="bidirectional"):
        ModelConfig(bidirectional=True)
    with pytest.raises(ValueError, match="attention_window"):
        ModelConfig(attention_window=0)
    with pytest.raises(ValueError, match="one entry per conv block"):
        ModelConfig(pool_time=(5, 1))


def test_wrong_feature_shape_is_an_error():
    model = CRNN(preset("tiny"))
    with pytest.raises(ValueError, match=r"\[batch, 7, frames, 64\]"):
        model(torch.zeros(1, 4, 10, 64))


def test_tiny_model_learns_a_fixed_target_quickly():
    from seld.losses import SeldLoss
    from seld.targets import LabelEvent, encode_targets

    config = preset("tiny")
    torch.manual_seed(0)
    model = CRNN(config)
    x = features(config, 10, batch=4)
    events = [LabelEvent(frame, 2, 0, 60.0, 0.0, 2.0) for frame in range(10)]
    targets = torch.as_tensor(encode_targets(events, 10, config.layout)).expand(4, -1, -1, -1, -1)
    loss_fn = SeldLoss(config.layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = loss_fn(model(x), targets)
        first = first or loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
