"""Check a pytest JUnit report of the explorer tests run without a browser (called by .ci/run).

    python .ci/check_skips.py REPORT.xml tests/test_explorer.py

Passes when the run had no failures or errors, every test marked ``browser`` in the test file was
reported skipped because chromium or its driver is absent, and every other test passed.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def browser_tests(path: Path) -> set[str]:
    """Names of the test functions decorated with ``@pytest.mark.browser``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if ast.unparse(deco) == "pytest.mark.browser":
                    names.add(node.name)
    return names


def main(report: str, test_file: str) -> int:
    expected = browser_tests(Path(test_file))
    if not expected:
        print(f"no @pytest.mark.browser tests found in {test_file}", file=sys.stderr)
        return 1
    skipped, passed, problems = set(), [], []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        outcome = {child.tag: child for child in case}
        if "failure" in outcome or "error" in outcome:
            problems.append(f"{name}: {'failed' if 'failure' in outcome else 'error'}")
        elif "skipped" in outcome:
            reason = outcome["skipped"].get("message", "")
            if "absent; install with" not in reason:
                problems.append(f"{name}: skipped for another reason: {reason}")
            skipped.add(name)
        else:
            passed.append(name)
    if skipped != expected:
        problems.append(f"skipped {sorted(skipped)}, expected the browser tests {sorted(expected)}")
    if not passed:
        problems.append("no test passed")
    if problems:
        print("the explorer tests without a browser:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"without a browser: {len(passed)} explorer tests passed, {len(skipped)} browser tests skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
