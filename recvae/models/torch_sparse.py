"""scipy CSR matrices as torch CSR tensors, so products with them run in MKL's sparse kernels.

scipy's sparse x dense product is single-threaded; torch's CSR `mm` / `addmm` call MKL, which
uses every torch thread. The values tensor is passed in (not copied from the matrix) so that a
caller can hand over transformed values, such as the normalised and dropped-out input of an
autoencoder batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def torch_csr(
    indptr: np.ndarray, indices: np.ndarray, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A torch CSR tensor with this structure and these values (no invariant check)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on addmm/mm only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr.astype(np.int64)),
            torch.from_numpy(indices.astype(np.int64)),
            values,
            size=shape,
            check_invariants=False,
        )


def sparse_times_dense(matrix: sp.csr_matrix, dense: np.ndarray) -> np.ndarray:
    """matrix @ dense in float32 through MKL (multi-threaded); `dense` must be C-contiguous
    float32 and is read in place, not copied."""
    values = torch.from_numpy(np.ascontiguousarray(matrix.data, dtype=np.float32))
    x = torch_csr(matrix.indptr, matrix.indices, values, matrix.shape)
    return torch.mm(x, torch.from_numpy(dense)).numpy()
