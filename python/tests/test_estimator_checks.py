"""scikit-learn's own estimator checks. Those that cannot pass are listed with the reason and
run as expected failures, so one that starts passing (or a new failure) is reported."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from gpumlp import MLPClassifier, MLPRegressor

# The reasons a check cannot pass, by estimator class and check name.
EXPECTED_FAILURES = {
    MLPClassifier: {},
    MLPRegressor: {},
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILURES[type(estimator)]


# device='cpu': the checks fit hundreds of tiny models; placing each on a GPU adapter would
# dominate the time and test nothing the other tests do not.
@parametrize_with_checks(
    [MLPClassifier(device="cpu"), MLPRegressor(device="cpu")],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
