"""Whisper's log-mel spectrogram of a batch of clips, computed with torch on the encoder's device.

Equal to WhisperFeatureExtractor's (numpy, one clip, padded to 30 s) to float32 precision, but
batched and computed only for the frames a window needs: the clip is zero-padded as Whisper pads
it, the STFT is centred with reflect padding (Hann window of 400 samples, hop 160), the power
spectrum goes through Whisper's mel filters, log10 floored at 1e-10, then clamped at the clip's
maximum minus 8 and scaled as (x + 4) / 4.  The maximum is the clip's own: frames past the real
audio (+2 frames whose windows still reach it) are log10(1e-10), the smallest value possible, so
the maximum over the frames computed equals the maximum over the full 30 s window.
"""
from __future__ import annotations

import torch

from pipeline.audio import FULL_MEL_FRAMES, HOP, WINDOW_SAMPLES

N_FFT = 400
EDGE_FRAMES = 2  # frames past the last real one whose window still holds real samples


def mel_filters(feature_extractor, device) -> torch.Tensor:
    """Whisper's mel filter bank [n_mels, n_fft/2 + 1] as float32 on `device`."""
    return torch.as_tensor(feature_extractor.mel_filters, dtype=torch.float32, device=device).T.contiguous()


def log_mel(audio: torch.Tensor, frames: int, filters: torch.Tensor) -> torch.Tensor:
    """[B, samples] float32 clips (zero after each clip's end, <= 30 s) -> [B, n_mels, frames] log-mel.

    `frames` (<= 3000) is how many mel frames to return; each clip must end within them.
    """
    if not 0 < frames <= FULL_MEL_FRAMES:
        raise ValueError(f"frames must be in 1..{FULL_MEL_FRAMES}, got {frames}")
    computed = min(frames + EDGE_FRAMES, FULL_MEL_FRAMES)
    # zeros up to where the last computed frame's window ends: the end's reflect padding then
    # mirrors zeros, as it does in the 30 s input (which is exactly this when computed == 3000)
    samples = min(computed * HOP + N_FFT // 2, WINDOW_SAMPLES)
    audio = audio[:, :samples]
    if audio.shape[1] < samples:
        audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[1]))
    window = torch.hann_window(N_FFT, device=audio.device)
    spec = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)[..., :computed]
    power = spec.real.square() + spec.imag.square()
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    top = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec[..., :frames], top - 8.0)
    return (log_spec + 4.0) / 4.0
