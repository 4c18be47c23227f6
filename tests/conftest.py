import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter):
    """Record how many CLI fuzz cases ran (tests/test_fuzz.py)."""
    module = sys.modules.get("test_fuzz")
    if module is not None and module.CASES["tried"]:
        codes = ", ".join(f"exit {k}: {v}" for k, v in sorted(module.CASES["by_exit_code"].items()))
        terminalreporter.write_line(f"CLI fuzz: {module.CASES['tried']} cases tried ({codes})")
