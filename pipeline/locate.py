"""Finding a cache from what the user knows (corpus, encoder, window) instead of its path."""
from __future__ import annotations

from pathlib import Path

from pipeline.cache import CacheError
from pipeline.encoder import ALIASES, EMBEDDED


def encoder_tag(model: str) -> str:
    """The file-name tag `extract` gives an encoder (as pipeline.encoder.resolve_model, without converting)."""
    model = ALIASES.get(model, model)
    return f"whisper-{model}" if model in EMBEDDED else Path(model.rstrip("/")).name


def find_cache(corpus: str | None = None, model: str | None = None, window: str | None = None,
               cache_dir: str = "cache") -> Path:
    """The one cache in `<cache_dir>/<corpus>/<tag>-<window>.h5` that fits the given corpus / model /
    window (any, when not given). None or several: a CacheError listing what is there and which flag
    picks one."""
    found = sorted(p for p in Path(cache_dir).glob(f"{corpus or '*'}/*.h5") if ".part-" not in p.name)
    if model:
        found = [p for p in found if p.stem.startswith(encoder_tag(model) + "-")]
    if window:
        found = [p for p in found if p.stem.endswith(f"-{window}")]
    if len(found) == 1:
        return found[0]
    wanted = ", ".join(f"{k} {v}" for k, v in (("corpus", corpus), ("model", model), ("window", window)) if v)
    if not found:
        present = sorted(str(p) for p in Path(cache_dir).glob("*/*.h5"))
        raise CacheError(
            f"no cache{' for ' + wanted if wanted else ''} in {cache_dir}/ "
            f"({'it holds ' + ', '.join(present) if present else 'it has none'}). Run `python cli.py extract "
            f"--corpus {corpus or 'NAME'}` first, or pass --cache FILE.h5 (or --cache-dir DIR).")
    raise CacheError(f"{len(found)} caches in {cache_dir}/ fit{' ' + wanted if wanted else ''}: "
                     f"{', '.join(map(str, found))}; pick one with --corpus / --model / --window, or --cache FILE.h5.")
