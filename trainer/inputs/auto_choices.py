"""Label-only automatic choices of what corpora differ in: speaker normalisation on/off, prompt-mean
removal on/off and the hidden layer (`speaker_norm=auto`, `text_norm=auto`, `layer=auto`: `train
--set ...`), decided inside each fold x seed run.

Evidence used, and nothing else:
- the labelled subset L: whether its labels depend on the speaker (a permutation test of the
  speaker-label mutual information): where speakers show only some emotions, a speaker's mean
  vector carries them and centring removes the emotion with the speaker; and, for the layer,
  speaker-grouped cross-validation of the warm-up recipe (linear head, L-BFGS, --l2) on L
  (held-out speakers, as at test time);
- the labelled subset L and the prompts: whether L's labels follow the prompt (a permutation test of
  the alignment between each labelled row's prompt mean, from the other speakers, and its class:
  trainer/inputs/prompt_norm.py): where prompts were written for some emotions, their mean carries them;
- label-free statistics of the rows the run sees: utterances per speaker and per prompt (centring
  on a handful of utterances subtracts the emotion with the speaker or the prompt).
Speaker normalisation is not chosen by the cross-validation: on the development corpora that
was noisier than the dependence test (docs/CORPORA.md).
The pool's hidden labels and the test fold's labels never enter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from trainer.inputs.feature_store import policy_rows
from trainer.inputs.features import Standardizer, middle_layer
from trainer.metrics import fast_macro_f1
from trainer.method.policy import Policy
from trainer.inputs.prompt_norm import MIN_UTTERANCES_PER_PROMPT, PromptCentered, prompt_codes, prompt_label_dependence
from trainer.method.supervised import fit_lbfgs

MIN_UTTERANCES_PER_SPEAKER = 8  # below this median, a speaker mean is mostly the utterances' own content
MAX_CV_GROUPS = 4
DEPENDENCE_ALPHA = 0.05  # chosen on inner validation over the development corpora (docs/CORPORA.md)


@dataclass
class AutoChoice:
    """What a run chose and why (stored in results.json per fold x seed)."""

    layer: str
    speaker_norm: bool
    reason: str
    cv_macro_f1: dict = field(default_factory=dict)  # layer -> held-out-speaker macro-F1 on L (layer auto)
    median_utterances_per_speaker: float = 0.0
    labelled_speakers: int = 0
    speaker_label_mi: float = 0.0  # mutual information of speaker and label over L (nats)
    speaker_label_p: float = 1.0  # its permutation p-value

    def to_dict(self) -> dict:
        return asdict(self)


def speaker_groups(speakers: np.ndarray, max_groups: int = MAX_CV_GROUPS, seed: int = 0) -> np.ndarray:
    """Group id per row: distinct speakers, in a seeded random order (so that speaker naming cannot
    line groups up with labels), dealt round-robin into min(#speakers, max_groups) groups."""
    names, inv = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
    k = min(len(names), max_groups)
    order = np.random.default_rng(seed).permutation(len(names))
    return (order % k)[inv]


def grouped_cv_macro_f1(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, l2: float) -> float:
    """Macro-F1 (%) of out-of-group predictions pooled over groups: each group is predicted by the
    linear L-BFGS head (the warm-up recipe) fitted on the other groups, standardised on them."""
    pred = np.full(len(y), -1)
    for g in np.unique(groups):
        train, held = groups != g, groups == g
        st = Standardizer().fit(x[train])
        pol = Policy(x.shape[1], x.shape[2], n_classes, "linear", dropout=0.0)
        pol.set_standardizer(st.mean_, st.std_)
        xt = pol.standardize(torch.as_tensor(x[train]))
        fit_lbfgs(pol, xt, torch.as_tensor(y[train], dtype=torch.long), l2)
        pred[held] = pol.probs(pol.standardize(torch.as_tensor(x[held]))).argmax(1).numpy()
    return fast_macro_f1(y, pred, n_classes)


def candidate_layers(n_states: int, layer: str) -> list[str]:
    """`auto`: every encoder layer output (hidden states 1..L; 0 is the convolutional front end)."""
    if layer == "auto":
        return [str(i) for i in range(1, n_states)]
    return [str(middle_layer(n_states))] if layer == "middle" else [layer]


def median_utterances_per_speaker(speakers) -> float:
    return float(np.median(np.unique(np.asarray(speakers, dtype=str), return_counts=True)[1]))


def choose(raw: np.ndarray, speakers: np.ndarray, labelled: np.ndarray, y_lab: np.ndarray, n_classes: int,
           layer: str, speaker_norm, l2: float, seen: np.ndarray | None = None,
           n_states: int | None = None) -> AutoChoice:
    """Resolve `auto` in layer / speaker_norm for one run.

    raw: [N, L+1, D] cached hidden states (read only for layer=auto; otherwise [N, 0, D] will do,
    with n_states = L+1); speakers: [N]; labelled: row indices of L with labels y_lab; seen: rows
    the run's learner sees (for the label-free per-speaker counts; default all).
    Speaker normalisation (auto) is off when the median speaker has fewer than
    MIN_UTTERANCES_PER_SPEAKER utterances, or when the labels of L depend on the speaker
    (permutation test of their mutual information, p < DEPENDENCE_ALPHA): then a speaker's mean
    carries its emotions and centring would remove them. Otherwise on. The layer (auto) is the
    best of speaker-grouped cross-validation on L, ties going to the middle layer.
    """
    speakers = np.asarray(speakers, dtype=str)
    seen = np.arange(len(raw)) if seen is None else seen
    med = median_utterances_per_speaker(speakers[seen])
    n_lab_spk = len(np.unique(speakers[labelled]))
    # no labelled rows of the cache's own (source_corpora, labeled_fraction 0): nothing to test
    mi, p = speaker_label_dependence(speakers[labelled], y_lab) if len(labelled) else (0.0, 1.0)
    n_states = raw.shape[1] if n_states is None else n_states
    middle = str(middle_layer(n_states))
    out = AutoChoice(layer=middle if layer in ("auto", "middle") else layer, speaker_norm=speaker_norm, reason="fixed",
                     median_utterances_per_speaker=med, labelled_speakers=n_lab_spk,
                     speaker_label_mi=mi, speaker_label_p=p)
    if speaker_norm == "auto":
        if med < MIN_UTTERANCES_PER_SPEAKER:
            out.speaker_norm, out.reason = (
                False,
                f"median utterances per speaker {med:.1f} < {MIN_UTTERANCES_PER_SPEAKER}: speaker norm off",
            )
        elif p < DEPENDENCE_ALPHA:
            out.speaker_norm, out.reason = (
                False,
                f"labels of L depend on the speaker (MI {mi:.3f} nats, p {p:.3f}): speaker norm off",
            )
        elif not len(labelled):
            out.speaker_norm, out.reason = True, (f"no labels of the cache's own to test speaker-label dependence, "
                                                  f"{med:.0f} utterances per speaker: speaker norm on")
        else:
            out.speaker_norm, out.reason = (
                True,
                f"no speaker-label dependence in L (p {p:.3f}), {med:.0f} utterances per speaker: speaker norm on",
            )
    layers = sorted(candidate_layers(n_states, layer), key=lambda s: (s != middle, s))  # ties go to the middle
    if len(layers) == 1:
        out.layer = layers[0]
        return out
    if n_lab_spk < 2:
        out.reason += "; fewer than 2 labelled speakers: middle layer kept"
        return out
    groups = speaker_groups(speakers[labelled])
    scores = {lay: grouped_cv_macro_f1(policy_rows(raw, speakers, lay, out.speaker_norm).rows(labelled), y_lab, groups,
                                       n_classes, l2) for lay in layers}
    out.layer = max(scores, key=scores.get)  # max keeps the first of equal scores
    out.cv_macro_f1 = scores
    out.reason += f"; layer by speaker-grouped CV on L ({len(np.unique(groups))} groups of {n_lab_spk} speakers)"
    return out


def resolve_auto(cfg, cache, split, y: np.ndarray, n_classes: int):
    """(cfg with concrete layer / speaker_norm, the choice as a dict) for one fold x seed.

    `cache` is the CacheData (every hidden state for layer=auto, else its table alone); only the
    labelled rows' labels (split.labeled) are read."""
    if cfg.layer != "auto" and cfg.speaker_norm != "auto":
        return cfg, {"layer": cfg.layer, "speaker_norm": cfg.speaker_norm, "reason": "fixed"}
    seen = np.concatenate([split.labeled, split.val, split.unlabeled])
    choice = choose(cache.features, cache.table["speaker"].to_numpy(), split.labeled, y[split.labeled], n_classes,
                    cfg.layer, cfg.speaker_norm, cfg.l2, seen,
                    n_states=int(cache.attrs.get("num_hidden_states", cache.features.shape[1])))
    return cfg.replace(layer=choice.layer, speaker_norm=choice.speaker_norm), choice.to_dict()


def choose_text_norm(setting, x, text_ids, speakers, split, y: np.ndarray, n_classes: int):
    """(the features to train on: x, or x with prompt means removed; the choice as a dict) for one run.

    x is the run's CenteredCache (layer chosen, speakers centred or not); text_ids one per cache row
    (None = the cache has none). Prompt means come from the rows the learner sees (labelled,
    validation, pool). `auto` is off without prompt ids; when the median prompt has fewer than
    MIN_UTTERANCES_PER_PROMPT of those rows (label-free: prompts barely repeat); when a speaker says
    the median prompt in fewer takes than half the classes (label-free: the design does not cross
    prompts with emotions, so a prompt's mean can hardly average over them); or when L's labels
    follow the prompt (prompt_label_dependence, p < DEPENDENCE_ALPHA) or that cannot be tested."""
    seen = np.concatenate([split.labeled, split.val, split.unlabeled])
    ids = np.full(len(x), "", dtype=object) if text_ids is None else np.asarray(text_ids, dtype=str)
    names, codes = prompt_codes(ids)
    known = seen[codes[seen] >= 0]
    counts = np.bincount(codes[known], minlength=len(names))
    med = float(np.median(counts[counts > 0])) if len(known) else 0.0
    takes = pd.DataFrame({"speaker": np.asarray(speakers, dtype=str)[known], "prompt": ids[known]}).value_counts()
    med_takes = float(np.median(takes)) if len(known) else 0.0
    out = {"text_norm": setting, "text_reason": "fixed", "prompts_seen": int((counts > 0).sum()),
           "median_utterances_per_prompt": med, "median_takes_per_speaker_prompt": med_takes,
           "prompt_label_stat": 0.0, "prompt_label_p": 1.0, "prompt_tested_rows": 0, "prompts_normalised": 0}
    if setting == "auto":
        if not len(known):
            out["text_norm"], out["text_reason"] = False, "no prompt ids (text_id) in the cache: text norm off"
        elif med < MIN_UTTERANCES_PER_PROMPT:
            out["text_norm"], out["text_reason"] = False, (f"median utterances per prompt {med:.1f} < "
                                                           f"{MIN_UTTERANCES_PER_PROMPT}: text norm off")
        elif med_takes < n_classes / 2:
            out["text_norm"], out["text_reason"] = False, (
                f"a speaker says the median prompt {med_takes:g} times, fewer than half the {n_classes} classes "
                "(prompts are not spoken across the emotions): text norm off")
        else:
            stat, p, n = prompt_label_dependence(x, codes, speakers, seen, split.labeled, y[split.labeled]) \
                if len(split.labeled) else (0.0, 1.0, 0)  # no labels of the cache's own: untestable
            out.update(prompt_label_stat=stat, prompt_label_p=p, prompt_tested_rows=n)
            if n == 0:
                out["text_norm"], out["text_reason"] = (
                    False,
                    (
                        "no labelled prompt is spoken by another training "
                        "speaker, so prompt-label dependence cannot be tested: text norm off"
                    ),
                )
            elif p < DEPENDENCE_ALPHA:
                out["text_norm"], out["text_reason"] = (
                    False,
                    f"labels of L follow the prompt (p {p:.3f}, {n} rows): text norm off",
                )
            else:
                out["text_norm"], out["text_reason"] = True, (f"no prompt-label dependence in L (p {p:.3f}, {n} rows), "
                                                              f"{med:g} utterances per prompt: text norm on")
    if not out["text_norm"]:
        return x, out
    centred = PromptCentered.fit(x, ids, seen)
    out["prompts_normalised"] = len(centred.normalised)
    return centred, out


def em_prior(posteriors: torch.Tensor, train_prior: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The pool's class prior by EM prior adaptation (Saerens, Latinne & Decaestecker 2002), label-free.

    posteriors [n, C] come from a classifier trained under `train_prior`; each step reweights them by
    pi_t / pi_train, renormalises, and takes their mean as pi_{t+1}. Classes absent from the
    training prior keep probability 0."""
    p = posteriors.double()
    base = train_prior.double().clamp_min(1e-12)
    prior = train_prior.double().clone()
    for _ in range(iters):
        q = p * (prior / base)
        q = q / q.sum(1, keepdim=True).clamp_min(1e-300)
        new = q.mean(0)
        done = float((new - prior).abs().max()) < tol
        prior = new
        if done:
            break
    return prior.to(train_prior.dtype)


PERMUTATIONS_PER_BLOCK = 32  # shuffles scored together: 32 x n labels, not 501 x n


def speaker_label_dependence(speakers, labels, n_perm: int = 500, seed: int = 0) -> tuple[float, float]:
    """(mutual information of speaker and label in nats, permutation p-value) over labelled rows.

    Label-only evidence that speakers differ in which emotions they show: under independence the
    labels can be shuffled across rows without changing the statistic's distribution, so the
    p-value is the share of shuffles with at least the observed information (plus one)."""
    _, s = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    rng = np.random.default_rng(seed)
    n_s, n_y, n = s.max() + 1, y.max() + 1, len(y)
    mi = []
    for start in range(0, 1 + n_perm, PERMUTATIONS_PER_BLOCK):  # a block of shuffles at a time: [block, n] ints
        perms = np.stack([y if k == 0 else rng.permutation(y)
                          for k in range(start, min(start + PERMUTATIONS_PER_BLOCK, 1 + n_perm))])
        cells = (np.arange(len(perms))[:, None] * (n_s * n_y) + s[None, :] * n_y + perms).ravel()
        joint = np.bincount(cells, minlength=len(perms) * n_s * n_y).reshape(len(perms), n_s, n_y) / n
        ps, py = joint.sum(2, keepdims=True), joint.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            mi.append(np.where(joint > 0, joint * np.log(joint / (ps * py)), 0.0).sum((1, 2)))
    mi = np.concatenate(mi)
    return float(mi[0]), float((1 + (mi[1:] >= mi[0] - 1e-12).sum()) / (1 + n_perm))
