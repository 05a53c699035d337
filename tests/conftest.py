import sys

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (small models on a shared machine), then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_terminal_summary(terminalreporter):
    """Print the case counts that property-based test modules collected."""
    lines = []
    for mod in list(sys.modules.values()):
        fn = getattr(mod, "pytest_terminal_summary_lines", None)
        if callable(fn) and getattr(mod, "__file__", "").startswith(__file__.rsplit("/", 1)[0]):
            lines += fn()
    if lines:
        terminalreporter.write_sep("-", "property-based cases run")
        for line in lines:
            terminalreporter.write_line(line)
