"""`seld bench model`: size and cost of each model preset, so they stay visible as the model evolves.

Multiply-adds are counted by torch's FlopCounterMode (convolutions, linear layers, GRU,
attention matmuls; elementwise work, normalization and pooling are not counted) on
10 s of each preset's own input (FOA log-mel + intensity vectors, 7 x 64, except
``seldnet``: STFT magnitude + phase of 4 channels, 8 x 513). Causal presets are also
counted streaming, one 100 ms label frame per step.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from seld.model import CRNN, PRESETS, count_parameters

SECONDS = 10.0
FEATURE_FRAMES_PER_SECOND = 50


def _macs(function) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops() // 2


def run() -> dict:
    torch.manual_seed(0)
    presets = {}
    for name, config in PRESETS.items():
        model = CRNN(config).eval()
        frames = int(SECONDS * FEATURE_FRAMES_PER_SECOND)
        features = torch.randn(1, config.input_channels, frames, config.input_bins)
        entry = {
            "input": f"{config.input_channels}x{config.input_bins}",
            "output_format": config.output_format + ("+distance" if config.distance else ""),
            "output_size": config.layout.size,
            "causal": config.causal,
            "parameters": count_parameters(model),
            "macs_per_second": _macs(lambda: model(features)) / SECONDS,
            "state_size": model.state_size if config.causal else None,
            "streaming_macs_per_second": None,
        }
        if config.causal:
            step = config.feature_frames_per_label

            def stream():
                state = model.initial_state(1)
                for start in range(0, frames, step):
                    state = model.step(features[:, :, start:start + step], state)[1]

            entry["streaming_macs_per_second"] = _macs(stream) / SECONDS
        presets[name] = entry
    return {"seconds_of_audio": SECONDS, "torch": torch.__version__, "presets": presets}


def format_table(result: dict) -> str:
    lines = [f"{'preset':<10} {'input':>6} {'output':<22} {'causal':>6} {'params':>9} "
             f"{'MMAC/s':>8} {'stream MMAC/s':>13} {'state':>6}"]
    for name, entry in result["presets"].items():
        stream = entry["streaming_macs_per_second"]
        lines.append(
            f"{name:<10} {entry['input']:>6} {entry['output_format']:<22} {'yes' if entry['causal'] else 'no':>6} "
            f"{entry['parameters']:>9,} {entry['macs_per_second'] / 1e6:>8.1f} "
            f"{'-' if stream is None else f'{stream / 1e6:.1f}':>13} {entry['state_size'] or '-':>6}")
    lines.append(f"MMAC/s: millions of multiply-adds per second of audio (conv, linear, GRU, attention), counted "
                 f"by torch's FlopCounterMode on {SECONDS:g} s of input; state: floats per stream")
    return "\n".join(lines)
