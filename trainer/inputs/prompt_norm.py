"""Content normalisation (`text_norm`): subtract each prompt's mean vector, after speaker centring.

Acted corpora repeat a fixed set of prompts (sentences, words) in every emotion, and a pooled
Whisper state encodes the words strongly: an utterance's nearest neighbours are the same sentence
rather than the same emotion. Where every prompt is spoken in every emotion, its mean vector is
"what was said" and carries no emotion, so removing it leaves "how it was said". Like speaker
centring this is label-free; unlike it, the means are inductive: computed from the run's training
rows only (labelled, validation and pool; the test fold only when it is in the pool, i.e.
transductive runs and `label`), and applied to every row whose prompt has a mean. A prompt with
fewer than MIN_UTTERANCES_PER_PROMPT training utterances, or seen only in test rows, is left as
it is: the mean of a few utterances is mostly their own content, emotion included.

Where prompts were written for one emotion, their mean *is* that emotion and removing it removes
what is to be recognised: `prompt_label_dependence` tests that on the labelled subset
(trainer/inputs/auto_choices.py decides).
"""
from __future__ import annotations

import numpy as np
import torch

from trainer.inputs.feature_store import CHUNK_ROWS, add_rows_by_group
from trainer.inputs.placement import Placement

MIN_UTTERANCES_PER_PROMPT = 8  # as for speakers: below this a mean is mostly its utterances' own content
MAX_TESTED_ROWS = 2000  # labelled rows the dependence test uses at most (a seeded sample beyond)


def prompt_codes(text_ids) -> tuple[np.ndarray, np.ndarray]:
    """(names of the known prompts, code per row: index into names, -1 where the text_id is empty)."""
    ids = np.asarray(text_ids, dtype=str)
    known = ids != ""
    names, inv = np.unique(ids[known], return_inverse=True)
    codes = np.full(len(ids), -1, np.int64)
    codes[known] = inv
    return names, codes


def row_sums_by_group(x, rows: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(float64 sums [n_groups, D'], counts) of the centred rows `rows` of x (a CenteredCache) by group
    id (`groups`, aligned with rows; -1 = none), read a chunk at a time."""
    width = int(np.prod(x.row_shape))
    sums, counts = np.zeros((n_groups, width)), np.zeros(n_groups, np.int64)
    keep = groups >= 0
    rows, groups = rows[keep], groups[keep]
    for start in range(0, len(rows), CHUNK_ROWS):
        sl = slice(start, start + CHUNK_ROWS)
        add_rows_by_group(sums, groups[sl], x.rows(rows[sl]).reshape(len(rows[sl]), width))
    np.add.at(counts, groups, 1)
    return sums, counts


class PromptCentered:
    """A CenteredCache's rows minus their prompt's mean (zero for prompts without one): what
    FoldData and FeatureRows read, in place of the CenteredCache (same `rows`, `row_shape`)."""

    def __init__(self, base, codes: np.ndarray, means: np.ndarray, names: np.ndarray, has_mean: np.ndarray):
        self.base, self.codes, self.names, self.has_mean = base, codes, names, has_mean
        self.means = means  # [n_prompts, D'] float64; rows of prompts without a mean are zero
        self._offsets = np.concatenate([means, np.zeros((1, means.shape[1]))])  # code -1 -> the zero row
        self._on: dict[torch.device, tuple] = {}

    @classmethod
    def fit(cls, base, text_ids, train_rows: np.ndarray,
            min_utterances: int = MIN_UTTERANCES_PER_PROMPT) -> "PromptCentered":
        """Prompt means over `train_rows` only (the rows the learner sees), for prompts with at least
        `min_utterances` of them."""
        names, codes = prompt_codes(text_ids)
        train_rows = np.asarray(train_rows, np.int64)
        sums, counts = row_sums_by_group(base, train_rows, codes[train_rows], len(names))
        has_mean = counts >= max(min_utterances, 2)
        means = np.where(has_mean[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
        return cls(base, codes, means, names, has_mean)

    @classmethod
    def saved(cls, base, text_ids, names, means: np.ndarray) -> "PromptCentered":
        """The means a run saved (one per prompt in `names`) applied to new rows: `predict`'s side.
        Rows whose text_id is empty or not among `names` keep their content."""
        lookup = {str(name): k for k, name in enumerate(names)}
        codes = np.asarray([lookup.get(str(t), -1) if t not in (None, "") else -1 for t in text_ids], np.int64)
        means = np.asarray(means, np.float64)
        return cls(base, codes, means, np.asarray(names, dtype=str), np.ones(len(means), bool))

    def __len__(self) -> int:
        return len(self.base)

    @property
    def row_shape(self) -> tuple[int, int]:
        return self.base.row_shape

    @property
    def normalised(self) -> np.ndarray:
        """Names of the prompts that have a mean (are subtracted)."""
        return self.names[self.has_mean]

    def to_save(self) -> tuple[list[str], np.ndarray]:
        """(names, float32 means) of the prompts subtracted: what a run keeps for `saved` (predict)."""
        return self.normalised.tolist(), self.means[self.has_mean].astype("float32")

    def rows(self, idx) -> np.ndarray:
        x = self.base.rows(idx)
        offset = self._offsets[self.codes[idx]]
        return (x.reshape(len(x), offset.shape[1]) - offset).astype(np.float32).reshape(x.shape)

    def take(self, idx: torch.Tensor, where) -> torch.Tensor:
        """`rows` of idx computed on `where`'s device, as CenteredCache.take does."""
        place = Placement.of(where)
        if place.host:
            return torch.from_numpy(self.rows(idx.numpy()))
        device = place.device
        if device not in self._on:
            self._on[device] = (
                torch.as_tensor(self._offsets, device=device),
                torch.as_tensor(self.codes, device=device),
            )
        offsets, codes = self._on[device]
        x = self.base.take(idx, place)
        return (x.reshape(len(x), offsets.shape[1]).double() - offsets[codes[idx]]).float().reshape(x.shape)


def prompt_label_dependence(x, codes: np.ndarray, speakers, train_rows: np.ndarray, labelled: np.ndarray,
                            y_lab: np.ndarray, n_perm: int = 500, seed: int = 0) -> tuple[float, float, int]:
    """(alignment statistic, permutation p-value, labelled rows tested): do the labels of L follow
    the prompt?

    For each labelled row i with a known prompt, m_i = the mean of that prompt over the *other
    speakers'* training rows (label-free; for a new speaker this is what would be subtracted). If
    every prompt is spoken in every emotion, m_i says nothing about i's label; if prompts carry
    emotions, m_i leans towards the mean of i's class. The statistic is
    T = sum_i <m_i - mean(m), z_c(i) - mean(z)>, with z_c the class means of the labelled rows'
    features, and the p-value the share of label shuffles (over the tested rows) with T at least
    as large (plus one). Unlike the mutual information of prompt and label (the speaker test),
    it needs no prompt to be labelled twice: CASIA at 10% labels has ~2 labelled rows per prompt.
    Returns p = 1 with 0 rows when no labelled row's prompt is spoken by another training speaker.
    """
    speakers = np.asarray(speakers, dtype=str)
    labelled = np.asarray(labelled, np.int64)
    _, spk = np.unique(speakers, return_inverse=True)
    train_rows = np.asarray(train_rows, np.int64)
    n_prompts = int(codes.max()) + 1 if len(codes) and codes.max() >= 0 else 0
    p_sum, p_cnt = row_sums_by_group(x, train_rows, codes[train_rows], n_prompts)
    # (speaker, prompt) sums only for the pairs of labelled rows
    key = np.where(codes >= 0, spk * max(n_prompts, 1) + codes, -1)
    pairs, lab_pair = np.unique(key[labelled], return_inverse=True)
    train_pair = np.searchsorted(pairs, key[train_rows])
    in_pairs = (train_pair < len(pairs)) & (pairs[np.minimum(train_pair, len(pairs) - 1)] == key[train_rows]) \
        & (key[train_rows] >= 0)
    s_sum, s_cnt = row_sums_by_group(x, train_rows, np.where(in_pairs, train_pair, -1), len(pairs))
    c = codes[labelled]
    others = np.where(c >= 0, p_cnt[np.maximum(c, 0)] - s_cnt[lab_pair], 0)
    tested = (c >= 0) & (others > 0)
    if tested.sum() < 4 or len(np.unique(y_lab[tested])) < 2:
        return 0.0, 1.0, int(tested.sum())
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(tested)
    if len(rows) > MAX_TESTED_ROWS:  # the statistic's cost grows with n x permutations
        rows = np.sort(rng.choice(rows, MAX_TESTED_ROWS, replace=False))
    m = (p_sum[c[rows]] - s_sum[lab_pair[rows]]) / others[rows][:, None]
    z = x.rows(labelled[rows]).reshape(len(rows), -1).astype(np.float64)
    m, z = m - m.mean(0), z - z.mean(0)
    _, y = np.unique(np.asarray(y_lab)[rows], return_inverse=True)
    perms = np.stack([y] + [rng.permutation(y) for _ in range(n_perm)])  # [1 + n_perm, n]
    stat = np.concatenate([_alignment(perms[start:start + 100], m, z, y.max() + 1)
                           for start in range(0, len(perms), 100)])
    return float(stat[0]), float((1 + (stat[1:] >= stat[0] - 1e-12 * abs(stat[0])).sum()) / (1 + n_perm)), len(rows)


def _alignment(perms: np.ndarray, m: np.ndarray, z: np.ndarray, n_classes: int) -> np.ndarray:
    """sum_i <m_i, class mean of z over i's class> for each labelling in perms [P, n] (m, z centred)."""
    onehot = np.eye(n_classes)[perms]  # [P, n, C]
    m_c = np.einsum("pnc,nd->pcd", onehot, m)  # class sums of m
    z_c = np.einsum("pnc,nd->pcd", onehot, z) / np.maximum(onehot.sum(1), 1)[..., None]  # class means of z
    return np.einsum("pcd,pcd->p", m_c, z_c)
