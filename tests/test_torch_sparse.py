"""The MKL sparse x dense product that EASE scoring uses, checked against hand-computed values."""

import numpy as np
import scipy.sparse as sp

from recvae.models.torch_sparse import sparse_times_dense


def test_sparse_times_dense_by_hand_including_an_empty_row():
    dense = np.arange(12, dtype=np.float32).reshape(4, 3)  # rows [0 1 2] [3 4 5] [6 7 8] [9 10 11]
    history = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=np.float64))
    product = sparse_times_dense(history, dense)
    expected = [[0 + 12, 1 + 14, 2 + 16], [0, 0, 0], [3 + 9, 4 + 10, 5 + 11]]
    np.testing.assert_array_equal(product, np.array(expected, dtype=np.float32))
    assert product.dtype == np.float32


def test_sparse_times_dense_with_no_rows():
    dense = np.ones((4, 3), dtype=np.float32)
    assert sparse_times_dense(sp.csr_matrix((0, 4), dtype=np.float32), dense).shape == (0, 3)
