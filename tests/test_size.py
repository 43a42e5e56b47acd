"""Size in real formats: each pruned matrix dense, bitmask or N:M-packed, whichever is smallest."""

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoprune.journal import Journal
from autoprune.trial import run_trial
from autoprune_plugins.compressors.remove_layers import RemoveLayers
from autoprune_plugins.scorers.size import (
    GROUP_SIZES,
    context_checkpoint_size,
    format_sizes,
    smallest_format,
)


def keep(rows: int, columns: int, kept: list[int]) -> torch.Tensor:
    """A rows × columns float32 matrix, nonzero only at the `kept` columns of every row."""
    matrix = torch.zeros(rows, columns)
    matrix[:, kept] = torch.arange(1, rows * len(kept) + 1, dtype=torch.float32).view(rows, len(kept))
    return matrix


def test_exact_bytes_of_a_hand_built_matrix_in_every_format():
    two_of_four = keep(2, 8, [0, 1, 5, 6])  # 2 of every 4 inputs (both of one pair), 4 of 8
    # dense 16·4; bitmask 8 values + 16 bits; 2:4 8 values of 32 + 2 bits; 4:8 8 values of 32 + 3 bits
    assert format_sizes(two_of_four, prunable=True) == {"dense": 64, "bitmask": 34, "2:4": 34, "4:8": 35}
    assert smallest_format(format_sizes(two_of_four, prunable=True)) == "2:4"  # ties go to the packed format
    one_of_four = keep(2, 8, [1, 4])
    # 1:2 8 values of 32 + 1 bit; 1:4 4 values of 32 + 2 bits; 2:8 4 values of 32 + 3 bits (17.5 bytes)
    sizes = format_sizes(one_of_four, prunable=True)
    assert sizes == {"dense": 64, "bitmask": 18, "1:2": 33, "1:4": 17, "2:8": 18}
    assert smallest_format(sizes) == "1:4"
    assert format_sizes(one_of_four, prunable=False) == {"dense": 64}  # e.g. an embedding
    half = two_of_four.to(torch.bfloat16)  # 16-bit values: 2:4 is 8 values of 16 + 2 bits
    assert format_sizes(half, prunable=True) == {"dense": 32, "bitmask": 18, "2:4": 18, "4:8": 19}


def test_n_of_m_groups_follow_the_inputs_of_each_row():
    # 2 nonzeros in each row's first 4 inputs, none in the next 4: 2:4, 2:8, and no 1:2
    assert set(format_sizes(keep(3, 8, [0, 1]), prunable=True)) == {"dense", "bitmask", "2:4", "2:8"}
    transposed = keep(8, 3, [0]).T.contiguous()  # 8 nonzeros in one row: dense in its groups of inputs
    assert set(format_sizes(transposed, prunable=True)) == {"dense", "bitmask"}
    assert set(format_sizes(keep(2, 6, [0, 2, 4]), prunable=True)) == {"dense", "bitmask", "1:2"}  # 6 = 3 pairs


def trial_size(context, prune: dict) -> dict:
    registry = context.registry
    result = run_trial(context, [registry.compressor("prune")], [registry.scorer("size")], {"prune": prune})
    return {"size_mb": result.values["size_mb"], **{k.removeprefix("size."): v for k, v in result.info.items()}}


def linear_bytes(context) -> tuple[int, int]:
    """Values and bytes of the decoder linears' weights."""
    weights = [linear.weight for linear in context.layout.all_linears().values()]
    return sum(w.numel() for w in weights), sum(w.numel() * w.element_size() for w in weights)


def test_a_2_of_4_model_is_stored_packed_and_1_of_4_below_its_bitmask(tiny_context):
    matrices = len(tiny_context.layout.all_linears())
    values, dense_linears = linear_bytes(tiny_context)
    two = trial_size(tiny_context, {"metric": "wanda", "sparsity": 0.5, "pattern": "2:4"})
    assert two["matrices.2of4"] == matrices and two["matrices.bitmask"] == two["matrices.dense"] == 0
    # half the values, each with 32 bits and a 2-bit index: as small as the bitmask, never larger
    assert two["size_mb"] * 1e6 == pytest.approx(two["dense_mb"] * 1e6 - dense_linears + values / 2 * 34 / 8)
    assert two["size_mb"] <= two["bitmask_mb"] < two["dense_mb"]
    one = trial_size(tiny_context, {"metric": "wanda", "sparsity": 0.75, "pattern": "1:4"})
    assert one["matrices.1of4"] == matrices
    # a quarter of the values, with 2-bit indices: half a bit a weight where the bitmask spends one
    assert (one["bitmask_mb"] - one["size_mb"]) * 1e6 == pytest.approx(values / 16)


def test_unstructured_half_is_stored_as_bitmask_and_a_nearly_dense_model_dense(tiny_context):
    matrices = len(tiny_context.layout.all_linears())
    values, dense_linears = linear_bytes(tiny_context)
    half = trial_size(tiny_context, {"metric": "wanda", "sparsity": 0.5})
    assert half["matrices.bitmask"] == matrices and half["size_mb"] == half["bitmask_mb"]
    assert half["size_mb"] * 1e6 == pytest.approx(half["dense_mb"] * 1e6 - dense_linears / 2 + values / 8)
    nearly_dense = trial_size(tiny_context, {"metric": "wanda", "sparsity": 0.01})  # the mask would cost more
    assert nearly_dense["matrices.dense"] == matrices and nearly_dense["size_mb"] == nearly_dense["dense_mb"]


def test_a_removed_block_counts_nothing(tiny_context):
    context = dataclasses.replace(tiny_context, cache={})
    remove = RemoveLayers()
    remove.prepare(context, {"count": 1})
    before = context_checkpoint_size(context)
    journal = Journal()
    info = remove.apply(context, {"count": 1, "compensate": False}, journal)
    try:
        after = context_checkpoint_size(context)
        gone = tiny_context.layout.blocks[info["removed"].index(1)]
        assert before.bytes - after.bytes == sum(p.numel() * p.element_size() for p in gone.parameters())
        assert sum(after.formats().values()) == sum(before.formats().values()) - len(tiny_context.layout.linears[0])
    finally:
        journal.restore()


def brute_force_sizes(matrix: torch.Tensor) -> dict[str, int]:
    """Every format that stores `matrix` exactly, checked group by group."""
    rows, columns = matrix.shape
    element = matrix.element_size()
    nonzero = (matrix != 0).tolist()
    sizes = {"dense": rows * columns * element, "bitmask": sum(map(sum, nonzero)) * element + -(-rows * columns // 8)}
    for m in GROUP_SIZES:
        if columns % m:
            continue
        most = max(sum(row[start : start + m]) for row in nonzero for start in range(0, columns, m))
        for n in range(max(most, 1), m):
            bits = rows * columns // m * n * (8 * element + int(math.log2(m)))
            sizes[f"{n}:{m}"] = -(-bits // 8)
    return sizes


@st.composite
def matrices(draw) -> torch.Tensor:
    """Small matrices, half of them pruned N:M so the packed formats come up, in 32 or 16 bits."""
    rows = draw(st.integers(1, 4))
    columns = draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]))
    nonzero = torch.tensor(draw(st.lists(st.booleans(), min_size=rows * columns, max_size=rows * columns)))
    nonzero = nonzero.view(rows, columns)
    m = draw(st.sampled_from([m for m in GROUP_SIZES if columns % m == 0] or [1]))
    if m > 1 and draw(st.booleans()):
        n = draw(st.integers(1, m - 1))
        groups = nonzero.view(rows, columns // m, m)
        nonzero = (groups & (groups.cumsum(-1) <= n)).view(rows, columns)  # at most n per group
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    return torch.where(nonzero, torch.full(nonzero.shape, 0.5), torch.zeros(nonzero.shape)).to(dtype)


@settings(max_examples=300, deadline=None)
@given(matrices())
def test_the_chosen_size_is_the_smallest_format_that_stores_the_matrix(matrix):
    reference = brute_force_sizes(matrix)
    sizes = format_sizes(matrix, prunable=True)
    # exactly the tightest N for each M is detected, and it is the cheapest N:M with that M
    assert set(sizes) == {"dense", "bitmask"} | {
        min((f for f in reference if f.endswith(f":{m}")), key=lambda f: int(f.split(":")[0]))
        for m in GROUP_SIZES
        if any(f.endswith(f":{m}") for f in reference)
    }
    assert all(reference[name] == size for name, size in sizes.items())
    assert sizes[smallest_format(sizes)] == min(reference.values())
