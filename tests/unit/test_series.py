"""Packed metric chunks and their summaries."""

import math

from keel.core.series import group_metrics, pack_floats, pack_ints, unpack_floats, unpack_ints


def test_packing_round_trips_bit_for_bit():
    values = [0.1, -2.5, math.inf, -math.inf, 1e-300]
    assert unpack_floats(pack_floats(values)) == values
    assert math.isnan(unpack_floats(pack_floats([math.nan]))[0])
    ints = [0, -1, 2**62, 1_700_000_000_000]
    assert unpack_ints(pack_ints(ints)) == ints
    assert len(pack_floats(values)) == 8 * len(values)


def test_grouping_and_latest_min_max():
    rows = [
        ("r1", "loss", 0.9, 0, 10),
        ("r1", "acc", 0.5, 0, 10),
        ("r1", "loss", 0.5, 2, 11),
        ("r1", "loss", math.nan, 1, 12),
        ("r2", "loss", 0.7, 0, 10),
    ]
    chunks = {(c.run_id, c.key): c for c in group_metrics(rows)}
    loss = chunks[("r1", "loss")]
    assert loss.steps == [0, 2, 1] and loss.count == 3
    assert (loss.latest_value, loss.latest_step) == (0.5, 2)  # highest step wins, not last logged
    assert (loss.min, loss.max) == (0.5, 0.9)  # NaN ignored
    assert chunks[("r2", "loss")].latest_value == 0.7


def test_ties_on_step_go_to_the_later_timestamp_then_the_later_row():
    chunk = group_metrics([("r", "m", 1.0, 5, 20), ("r", "m", 2.0, 5, 10), ("r", "m", 3.0, 5, 20)])[0]
    assert chunk.latest_value == 3.0


def test_all_nan_has_no_min_max():
    chunk = group_metrics([("r", "m", math.nan, 0, 1)])[0]
    assert chunk.min is None and chunk.max is None and math.isnan(chunk.latest_value)
