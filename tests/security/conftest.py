"""The experiment fixtures of the web app's tests, shared here."""

from tests.webmushra.conftest import open_experiment, participant_at_trials, rendered_experiment  # noqa: F401
from tests.webmushra.test_access_matrix import world  # noqa: F401
