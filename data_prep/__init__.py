"""Dataset preparation: synthesis (`seld synth`), sound banks, converters, the default models' recipe."""
