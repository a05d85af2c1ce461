"""The contract kit checks ``batch_reduction``: a true declaration passes, a false one fails."""

from __future__ import annotations

import re

import pytest

from sparsekit.methods.kl import KLSparse
from sparsekit.methods.ksparse import KSparse
from sparsekit.methods.l2 import L2
from sparsekit.testing import ContractError
from sparsekit.testing.contract import check_batch_reduction


@pytest.mark.parametrize(("cls", "params"), [(L2, {}), (KLSparse, {}), (KSparse, {"k": 3})])
def test_the_built_in_declarations_hold(cls, params):
    check_batch_reduction(cls, params)


class KLClaimingRowMean(KLSparse):
    name = "kl-row-mean"
    batch_reduction = "row_mean"  # false: ρ̂ is the batch's mean, not a mean of per-row terms


class KLWrongFromMeans(KLSparse):
    name = "kl-wrong-means"

    def penalty_from_column_means(self, xp, means, rows):
        return super().penalty_from_column_means(xp, means, 2 * rows)


@pytest.mark.parametrize(
    ("cls", "says"),
    [
        (KLClaimingRowMean, "is not the share-weighted sum of its halves"),
        (KLWrongFromMeans, "penalty_from_column_means() of the code's means is not"),
    ],
)
def test_a_false_declaration_fails_the_kit(cls, says):
    with pytest.raises(ContractError, match=r"\[batch_reduction\]: .*" + re.escape(says)):
        check_batch_reduction(cls, {})


def test_dict_learning_is_refused_with_its_own_reason():
    from sparsekit.training.distributed import refusal
    from sparsekit.training.trainer import make_method

    method = make_method("dict-learning")
    said = refusal(method, method.upkeep())
    assert said is not None and "worst-coded sample of the whole batch" in said
    assert "\n" not in said
