"""The MKL sparse x dense product EASE scores with (on the weights' device), checked by hand."""

import numpy as np
import scipy.sparse as sp
import torch

from recvae.models.torch_sparse import sparse_times_dense


def test_sparse_times_dense_by_hand_including_an_empty_row():
    dense = np.arange(12, dtype=np.float32).reshape(4, 3)  # rows [0 1 2] [3 4 5] [6 7 8] [9 10 11]
    history = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=np.float64))
    product = sparse_times_dense(history, torch.from_numpy(dense)).numpy()
    expected = [[0 + 12, 1 + 14, 2 + 16], [0, 0, 0], [3 + 9, 4 + 10, 5 + 11]]
    np.testing.assert_array_equal(product, np.array(expected, dtype=np.float32))
    assert product.dtype == np.float32


def test_sparse_times_dense_with_no_rows():
    dense = np.ones((4, 3), dtype=np.float32)
    empty = sp.csr_matrix((0, 4), dtype=np.float32)
    assert sparse_times_dense(empty, torch.from_numpy(dense)).shape == (0, 3)


def test_sparse_input_linear_writes_the_weight_gradient_into_the_reused_buffer():
    """With a grad buffer the weight gradient is the same numbers, lands in that buffer (no
    fresh table per batch) and adds to a gradient already there; without one it is returned."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from recvae.models.torch_sparse import SparseInputLinear, torch_csr, transpose_csr

    batch = sp.random(6, 9, density=0.4, format="csr", dtype=np.float32, random_state=3)
    values = torch.from_numpy(batch.data)
    x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
    xt = transpose_csr(batch, values)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(9, 4, generator=generator, requires_grad=True)
    bias = torch.zeros(4, requires_grad=True)
    SparseInputLinear.apply(weight, bias, x, xt).square().sum().backward()
    expected = weight.grad.clone()
    np.testing.assert_allclose(
        expected.numpy(), batch.T @ (2 * (batch @ weight.detach().numpy())), rtol=1e-5
    )
    buffer = torch.full((9, 4), float("nan"))
    for _ in range(2):  # zero_grad(set_to_none=True) between batches: the buffer is reused
        weight.grad = None
        SparseInputLinear.apply(weight, bias, x, xt, buffer).square().sum().backward()
        assert weight.grad is buffer
        assert torch.equal(weight.grad, expected)
    SparseInputLinear.apply(weight, bias, x, xt, buffer).square().sum().backward()
    assert torch.allclose(weight.grad, 2 * expected)  # accumulates like autograd would


def test_dense_output_linear_matches_addmm_and_reuses_its_weight_gradient_table():
    import torch

    from recvae.models.torch_sparse import DenseOutputLinear

    generator = torch.Generator().manual_seed(1)
    h0 = torch.randn(5, 3, generator=generator)
    weight = torch.randn(3, 7, generator=generator, requires_grad=True)
    bias = torch.randn(7, generator=generator, requires_grad=True)
    h = h0.clone().requires_grad_(True)
    torch.addmm(bias, h, weight).square().sum().backward()
    expected = (h.grad.clone(), weight.grad.clone(), bias.grad.clone())
    buffer = torch.full((3, 7), float("nan"))
    for _ in range(2):
        weight.grad = bias.grad = None
        h = h0.clone().requires_grad_(True)
        DenseOutputLinear.apply(h, weight, bias, buffer).square().sum().backward()
        assert weight.grad is buffer
        for got, want in zip((h.grad, weight.grad, bias.grad), expected, strict=True):
            assert torch.equal(got, want)
