"""Trials restore the dense weights from a compact undo log, never from disk or a full copy."""

import torch

from autoprune.journal import Journal, pack_bits, unpack_bits


def test_bit_packing_round_trips():
    torch.manual_seed(0)
    for numel in (1, 7, 8, 9, 1000):
        mask = torch.rand(numel) > 0.5
        assert torch.equal(unpack_bits(pack_bits(mask), numel), mask)


def test_zero_then_restore_is_exact_and_smaller_than_a_copy():
    torch.manual_seed(0)
    weight = torch.randn(256, 512)
    original = weight.clone()
    mask = torch.rand_like(weight) < 0.5
    journal = Journal()
    journal.zero(weight, mask)
    assert (weight[mask] == 0).all() and torch.equal(weight[~mask], original[~mask])
    full_copy = weight.numel() * weight.element_size()
    assert journal.nbytes < 0.6 * full_copy  # about half the values plus 1/32 for the mask
    journal.restore()
    assert torch.equal(weight, original)


def test_undo_steps_run_in_reverse_order():
    order = []
    journal = Journal()
    journal.on_undo(lambda: order.append("first"))
    journal.on_undo(lambda: order.append("second"))
    journal.restore()
    assert order == ["second", "first"]


def test_zero_columns_then_restore_is_exact_and_keeps_only_the_values():
    torch.manual_seed(0)
    weight = torch.randn(64, 300)
    original = weight.clone()
    columns = torch.rand(64, 300).argsort(dim=1)[:, :120].to(torch.int16)
    journal = Journal()
    journal.zero_columns(weight, columns)
    assert ((weight == 0).sum(1) == 120).all()
    assert journal.nbytes == 64 * 120 * 4  # the removed values, no mask
    journal.restore()
    assert torch.equal(weight, original)
