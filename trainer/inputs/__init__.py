"""Policy inputs: folds, cache reading, centring by speaker and prompt, standardising, placement on
the device and the label-only automatic choices; everything up to the FoldData a method trains on."""
