"""Dense weights read back from the snapshot file are bit-identical, whatever the dtype or layout."""

import pytest
import torch

from autoprune.snapshot import WeightSnapshot


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_restore_writes_back_exactly_the_saved_values(dtype):
    torch.manual_seed(0)
    snapshot = WeightSnapshot()
    first, second = torch.randn(64, 96).to(dtype), torch.randn(3, 5).to(dtype)
    saved_first, saved_second = first.clone(), second.clone()
    snapshot.save("first", first)
    snapshot.save("second", second)
    first.zero_()
    second.mul_(2)
    snapshot.restore("second", second)
    snapshot.restore("first", first)
    assert torch.equal(first, saved_first) and torch.equal(second, saved_second)
    assert "first" in snapshot and "third" not in snapshot


def test_restore_into_a_non_contiguous_tensor():
    snapshot = WeightSnapshot()
    base = torch.arange(12.0).reshape(3, 4)
    transposed = base.T
    snapshot.save("t", transposed)
    base.zero_()
    snapshot.restore("t", transposed)
    assert torch.equal(transposed, torch.arange(12.0).reshape(3, 4).T)


def test_restore_refuses_a_tensor_of_another_size():
    snapshot = WeightSnapshot()
    snapshot.save("w", torch.ones(4, 4))
    with pytest.raises(ValueError, match="holds 64 bytes"):
        snapshot.restore("w", torch.ones(4, 3))
