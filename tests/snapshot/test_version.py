import re

import vmm
from tests.conftest import ROOT


def test_the_version_snapshots_record_is_the_packages():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == vmm.__version__
