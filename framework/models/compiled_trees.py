"""A HistGradientBoosting model's trees, scored a few rows at a time to the bit.

scikit-learn's ``_raw_predict`` walks its trees one by one in a Python loop, with an
OpenMP parallel region per tree: most of a one-row score. Here every tree is scored at
once with a handful of NumPy calls (:class:`ExitLeaves`), or, for trees of over 64
leaves, walked all at once a level at a time; either way the leaf each row reaches is
the one scikit-learn's walk reaches, and the leaves are summed in its order. Part of
:mod:`framework.models.compiled`, which checks every compiled model against
scikit-learn before it serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Up to this many rows the trees are scored here; beyond it scikit-learn's per-tree
#: loop (OpenMP over rows) is faster (measured: bench/serving.py's model).
TREE_WALK_MAX_ROWS = 32
_ALL = np.uint64((1 << 64) - 1)
_ONE = np.uint64(1)


class Trees:
    """Every tree of a fitted single-output HistGradientBoosting model, as flat arrays.

    A row's walk through all trees advances one level at a time for every tree at once;
    leaves point to themselves, so walking past a leaf stays on it.
    """

    def __init__(self, hgb: Any) -> None:
        if hgb.n_trees_per_iteration_ != 1 or hgb._preprocessor is not None:
            raise NotImplementedError("a multiclass model or native categorical features")
        nodes = [predictors[0].nodes for predictors in hgb._predictors]
        if any(p.nodes["is_categorical"].any() for ps in hgb._predictors for p in ps):
            raise NotImplementedError("categorical splits")
        sizes = np.array([len(n) for n in nodes], dtype=np.intp)
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        flat = np.concatenate(nodes)
        shift = np.repeat(offsets, sizes)
        own = np.arange(len(flat), dtype=np.intp)
        leaf = flat["is_leaf"].astype(bool)
        self.feature = flat["feature_idx"].astype(np.intp)
        self.threshold = flat["num_threshold"].astype(np.float64)
        self.missing_left = flat["missing_go_to_left"].astype(bool)
        self.left = np.where(leaf, own, flat["left"].astype(np.intp) + shift)
        self.right = np.where(leaf, own, flat["right"].astype(np.intp) + shift)
        self.value = flat["value"].astype(np.float64)
        self.roots = offsets
        self.depth = int(flat["depth"].max()) if len(flat) else 0
        self.baseline = float(np.asarray(hgb._baseline_prediction).ravel()[0])
        self.hgb = hgb
        self.exits = ExitLeaves.of(self, leaf) if len(flat) else None

    def raw(self, x: np.ndarray) -> np.ndarray:
        """``hgb._raw_predict(x)`` as shape (n, 1): the baseline plus every tree's leaf."""
        n = len(x)
        if n > TREE_WALK_MAX_ROWS:
            return np.asarray(self.hgb._raw_predict(x))
        if self.exits is not None:  # 2.5x faster than the walk from 1 to 32 rows
            return self._summed(self.exits.leaf_values(x))
        at = np.broadcast_to(self.roots, (n, len(self.roots)))
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            values = x[rows, self.feature[at]]
            left = np.where(np.isnan(values), self.missing_left[at], values <= self.threshold[at])
            at = np.where(left, self.left[at], self.right[at])
        return self._summed(self.value[at])

    def _summed(self, leaves: np.ndarray) -> np.ndarray:
        """The baseline plus each row's leaf values, (n, trees) -> (n, 1)."""
        summands = np.empty((len(leaves), len(self.roots) + 1), dtype=np.float64)
        summands[:, 0] = self.baseline
        summands[:, 1:] = leaves
        # cumsum adds left to right, as _raw_predict does tree by tree (np.sum would pair)
        return np.cumsum(summands, axis=1)[:, -1:]


class ExitLeaves:
    """Every tree's exit leaf for a few rows in a handful of NumPy calls, not a call per
    level (QuickScorer: Lucchese et al., SIGIR 2015): a tree's leaves are numbered left to
    right; every internal node whose test sends the row right rules out the leaves of its
    left subtree (a 64-bit mask); the exit leaf is the lowest leaf no failing node rules
    out. All nodes of all trees are tested at once. The leaf is the one the walk reaches,
    so the sum is the walk's to the bit (the tests compare both with scikit-learn).

    scikit-learn's test at a node: a missing value goes where ``missing_go_to_left``
    says, any other value left when ``value <= threshold``. The row is given twice,
    missing values as -inf (for the nodes that send them left: -inf <= any threshold)
    and as they are (for the others: NaN <= anything is false, so right), plus a zero
    column the per-tree sentinels test (0 <= 0: a tree that is one leaf has a node too).
    """

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, masks: np.ndarray,
                 starts: np.ndarray, leaf_values: np.ndarray, leaf_offsets: np.ndarray,
                 columns: int) -> None:  # fmt: skip
        self.feature, self.threshold, self.masks = feature, threshold, masks
        self.starts, self.values, self.offsets = starts, leaf_values, leaf_offsets
        self.columns = columns

    @classmethod
    def of(cls, trees: Trees, leaf: np.ndarray) -> ExitLeaves | None:
        """The exit-leaf form of ``trees``; None when a tree has over 64 leaves."""
        columns = int(trees.hgb.n_features_in_)
        feature: list[int] = []
        threshold: list[float] = []
        masks: list[int] = []
        starts: list[int] = []
        values: list[float] = []
        offsets: list[int] = []
        everything = (1 << 64) - 1
        for root in trees.roots.tolist():
            order, spans = _leaves_in_order(trees, root, leaf)
            if len(order) > 64:
                return None
            starts.append(len(feature))
            feature.append(2 * columns)  # the sentinel: the zero column, 0 <= 0
            threshold.append(0.0)
            masks.append(everything)
            for node, first, end in spans:  # the node's test fails: its left leaves go
                missing_left = bool(trees.missing_left[node])
                feature.append(int(trees.feature[node]) + (0 if missing_left else columns))
                threshold.append(float(trees.threshold[node]))
                masks.append(everything & ~(((1 << (end - first)) - 1) << first))
            offsets.append(len(values))
            values += [float(trees.value[node]) for node in order]
        return cls(np.array(feature, dtype=np.intp), np.array(threshold),
                   np.array(masks, dtype=np.uint64), np.array(starts, dtype=np.intp),
                   np.array(values), np.array(offsets, dtype=np.intp), columns)  # fmt: skip

    def leaf_values(self, x: np.ndarray) -> np.ndarray:
        """Each row's exit-leaf value in every tree, (n, trees)."""
        n = len(x)
        given = np.empty((n, 2 * self.columns + 1))
        given[:, : self.columns] = x
        np.copyto(given[:, : self.columns], -np.inf, where=np.isnan(x))
        given[:, self.columns : 2 * self.columns] = x
        given[:, -1] = 0.0
        left = given[:, self.feature] <= self.threshold
        alive = np.bitwise_and.reduceat(np.where(left, _ALL, self.masks), self.starts, axis=1)
        _, exponent = np.frexp((alive & (~alive + _ONE)).astype(np.float64))  # lowest bit
        leaves: np.ndarray = self.values[self.offsets + (exponent - 1)]
        return leaves


def _leaves_in_order(
    trees: Trees, root: int, leaf: np.ndarray
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """A tree's leaves left to right, and each internal node with the range [first, end)
    of the leaf numbers in its left subtree (iterative: trees can be deep)."""
    order: list[int] = []
    spans: list[tuple[int, int, int]] = []
    first: dict[int, int] = {}
    stack: list[tuple[bool, int]] = [(False, root)]  # (left subtree done?, node)
    while stack:
        done, node = stack.pop()
        if done:
            spans.append((node, first[node], len(order)))
        elif leaf[node]:
            order.append(node)
        else:
            first[node] = len(order)
            stack += [(False, int(trees.right[node])), (True, node), (False, int(trees.left[node]))]
    return order, spans
