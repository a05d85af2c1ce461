"""For plugin authors and tests: the method contract kit, the gradient check, the template.

``from sparsekit.testing import method_contract_tests`` gives a plugin's test suite every
check the built-ins pass; :func:`check_gradients` compares a method's hand-written gradients
with central finite differences.
"""

from sparsekit.backend.simulated import simulated_backend
from sparsekit.testing.contract import (
    CHECKS,
    TEST_DATA_ENV,
    ContractError,
    check_method,
    iter_checks,
    method_contract_tests,
    mnist_data_dir,
)
from sparsekit.testing.gradcheck import check_gradients

__all__ = [
    "CHECKS",
    "TEST_DATA_ENV",
    "ContractError",
    "check_gradients",
    "check_method",
    "iter_checks",
    "method_contract_tests",
    "mnist_data_dir",
    "simulated_backend",
]
