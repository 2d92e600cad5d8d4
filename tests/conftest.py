"""Fixtures shared by the test files."""
import pytest

import qmtik


@pytest.fixture(scope="session")
def digits():
    """The bundled digits: ((train inputs, labels), (test inputs, labels))."""
    return qmtik.load_dataset("digits")
