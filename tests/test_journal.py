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


def test_the_journal_knows_which_tensors_a_trial_changed():
    first, second, third = torch.ones(4), torch.ones(4), torch.ones(4)
    journal = Journal()
    journal.zero(first, first > 0)
    journal.overwrite(second, torch.zeros(4))
    journal.on_undo(lambda: third.fill_(1), changes=third.fill_(0))
    assert journal.changed(first) and journal.changed(second) and journal.changed(third)
    assert not journal.changed(torch.ones(4))
    journal.restore()
    assert not (journal.changed(first) or journal.changed(second) or journal.changed(third))
    assert torch.equal(third, torch.ones(4))
