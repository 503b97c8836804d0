"""The pricing rule: the largest weighted share per hour, integer milli-SU rounded up, one
function for quotes and charges."""

from __future__ import annotations

from decimal import Decimal

import pytest
from quota_helpers import WEIGHTS

from quotas import service
from quotas.rates import (
    Amounts,
    billing_minutes,
    format_su,
    from_su,
    price,
    rate_card,
    rate_per_hour,
    to_su,
)
from schedulers.config import BillingWeights, PartitionConfig


def test_rate_is_the_largest_weighted_share_not_their_sum() -> None:
    # 2 GPUs = 2, 4 cores x 0.25 = 1, 8 GiB x 0.0625 = 0.5: the GPUs set the rate
    assert rate_per_hour(WEIGHTS, Amounts(gpus=2, cpus=4, mem_mb=8192)) == 2
    # a CPU job asking for a lot of memory is priced by its memory
    assert rate_per_hour(WEIGHTS, Amounts(cpus=8, mem_mb=64 * 1024)) == 4
    assert price(WEIGHTS, Amounts(cpus=8, mem_mb=64 * 1024), 3600) == 4000


def test_price_rounds_up_to_the_next_whole_milli_su() -> None:
    one_core = Amounts(cpus=1)  # 0.25 SU an hour: 0.0694 milli-SU a second
    assert price(WEIGHTS, one_core, 1) == 1
    assert price(WEIGHTS, one_core, 14) == 1  # 0.972
    assert price(WEIGHTS, one_core, 15) == 2  # 1.042
    assert price(WEIGHTS, one_core, 0) == 0


def test_weights_are_taken_as_the_decimals_the_operator_wrote() -> None:
    # in binary floats 3 x 0.1 = 0.30000000000000004, which would round 300 up to 301
    tenth = BillingWeights(gpu=0.0, cpu=0.1, mem_gb=0.0)
    assert price(tenth, Amounts(cpus=3), 3600) == 300


def test_quote_and_charge_are_the_same_function_of_resources_and_time() -> None:
    asked = Amounts(gpus=1, cpus=8, mem_mb=32 * 1024)
    # 1 GPU = 1, 8 cores x 0.25 = 2, 32 GiB x 0.0625 = 2: 2 SU an hour for two hours
    assert service.quote(WEIGHTS, asked, 7200) == price(WEIGHTS, asked, 7200) == 4000


def test_negative_resources_or_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Amounts(cpus=-1)
    with pytest.raises(ValueError, match="negative"):
        price(WEIGHTS, Amounts(), -1)


def test_su_have_three_decimals_for_people() -> None:
    assert to_su(1234) == Decimal("1.234") and format_su(-500) == "-0.500 SU"
    assert from_su(Decimal("12.5")) == 12_500
    with pytest.raises(ValueError, match="three decimals"):
        from_su(Decimal("0.0001"))


def test_one_su_is_sixty_billing_minutes_times_the_billing_scale_rounded_up() -> None:
    assert billing_minutes(1000) == 60
    assert billing_minutes(1) == 1
    assert billing_minutes(0) == 0
    # TRESBillingWeights in milli-SU (the test cluster's): a milli-SU is 60 billing-minutes
    assert billing_minutes(1, scale=1000) == 60
    assert billing_minutes(1500, scale=1000) == 90_000


def test_rate_card_prices_each_partition_with_the_same_rule() -> None:
    partition = PartitionConfig(name="debug", max_time_minutes=60, max_cpus_per_job=4,
                                max_mem_mb_per_job=4096,
                                billing=BillingWeights(gpu=0.0, cpu=0.25, mem_gb=0.0625))
    [line] = rate_card("hpcgwtest", [partition])
    assert (line.cluster, line.partition) == ("hpcgwtest", "debug")
    assert (line.msu_per_cpu_hour, line.msu_per_gb_hour, line.msu_per_gpu_hour) == (250, 63, 0)
    assert line.max_job_msu_per_hour == price(partition.billing, Amounts(cpus=4, mem_mb=4096),
                                              3600) == 1000
