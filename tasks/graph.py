"""Connected components of the identity graph.

Records are nodes (`record_idx`), links are edges; a unified member is a
component. scipy's sparse graph routine does this in C, far faster than
iterated joins.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def component_labels(n_records: int, edges: pl.DataFrame) -> np.ndarray:
    """Label each record 0..n-1 with its component; `edges` has `left`, `right` record_idx."""
    if n_records == 0:
        return np.zeros(0, dtype=np.int64)
    left = edges["left"].cast(pl.Int64).to_numpy()
    right = edges["right"].cast(pl.Int64).to_numpy()
    weights = np.ones(len(left), dtype=np.int8)
    adjacency = coo_matrix((weights, (left, right)), shape=(n_records, n_records))
    _, labels = connected_components(adjacency, directed=False)
    return labels.astype(np.int64)
