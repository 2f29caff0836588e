"""`seld devices`: the audio input devices PortAudio sees, and how `--device` picks one."""

from __future__ import annotations

import sys

from seld import SeldError


def input_devices(sd) -> list[dict]:
    """Input devices as dicts: index, name, host_api, channels, default_rate, default."""
    try:
        default_input = sd.query_devices(kind="input")["index"]
    except Exception:  # sounddevice raises PortAudioError when there is no default input
        default_input = -1
    host_apis = [api["name"] for api in sd.query_hostapis()]
    devices = []
    for info in sd.query_devices():
        if info["max_input_channels"] <= 0:
            continue
        devices.append({
            "index": info["index"],
            "name": info["name"],
            "host_api": host_apis[info["hostapi"]] if info["hostapi"] < len(host_apis) else "?",
            "channels": int(info["max_input_channels"]),
            "default_rate": int(info["default_samplerate"]),
            "default": info["index"] == default_input,
        })
    return devices


def resolve_device(sd, spec: str | None) -> int:
    """The index of the input device `--device` names: an index, a name, or a part of a
    name (as `seld devices` lists them); the system's default input without one."""
    devices = input_devices(sd)
    if not devices:
        raise SeldError("no audio input device found (see `seld devices`)")
    if spec is None:
        for device in devices:
            if device["default"]:
                return device["index"]
        return devices[0]["index"]
    if spec.strip().isdigit():
        index = int(spec)
        for device in devices:
            if device["index"] == index:
                return index
        raise SeldError(f"--device {spec}: no input device has that index (see `seld devices`)")
    exact = [d for d in devices if d["name"].lower() == spec.lower()]
    if len(exact) == 1:
        return exact[0]["index"]
    matches = [d for d in devices if spec.lower() in d["name"].lower()]
    if not matches:
        raise SeldError(f"--device {spec}: no input device has that name (see `seld devices`)")
    if len(matches) > 1:
        names = ", ".join(f"{d['index']} ({d['name']})" for d in matches)
        raise SeldError(f"--device {spec}: matches several input devices: {names}; give its index")
    return matches[0]["index"]


def devices_command(args) -> int:
    from seld.realtime.capture import PortAudioMissing, import_sounddevice

    try:
        sd = import_sounddevice()
    except PortAudioMissing as error:
        print(f"seld devices: {error}", file=sys.stderr)
        return 2
    devices = input_devices(sd)
    if not devices:
        print("seld devices: no audio input devices found", file=sys.stderr)
        return 1
    width = max(len(d["name"]) for d in devices)
    api_width = max(len("host API"), *(len(d["host_api"]) for d in devices))  # "JACK Audio Connection Kit"
    print(f"    {'index':>5}  {'name':<{width}}  {'host API':<{api_width}}  {'channels':>8}  {'default rate':>12}")
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"  {mark} {d['index']:>5}  {d['name']:<{width}}  {d['host_api']:<{api_width}}  {d['channels']:>8}  "
              f"{d['default_rate']:>9} Hz")
    print("* the default input; pick another with `seld live --device INDEX|NAME`")
    return 0
