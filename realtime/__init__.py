"""The live microphone-array demo (`seld live`, `seld devices`).

capture.py (device or file -> bounded block queue; the recorder), loop.py (the engine
thread), display_terminal.py and web.py (+ web.html) (displays), devices.py, live.py
(the command). sounddevice is imported only when a device is opened.
"""
