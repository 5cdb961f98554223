"""pipeline: manifest -> audio -> Whisper encoder -> HDF5 cache of pooled hidden states."""
