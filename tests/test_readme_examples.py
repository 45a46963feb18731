"""The README's Python examples run as written and print what the README says (slow: they encode scifact).

The MTEB and BEIR examples are left out (each encodes scifact again with another model; the MTEB and BEIR paths are
covered by tests/unit/test_mteb_tasks.py, tests/unit/test_mteb_naming.py and tests/retrieval/test_beir_search.py), and
so is the publishing example, which needs the Hub (tests/*/test_*_push_to_hub.py push through a stand-in).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parent.parent
# the first line of the examples left out (see the module docstring)
SKIPPED = ("import mteb", "from beir.", "# publishing needs")


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if not b.startswith(SKIPPED)]


def test_readme_examples_run_and_print_what_the_readme_says(beir_data_dir: Path, tmp_path: Path) -> None:
    examples = readme_examples()
    assert len(examples) >= 5, "the README's examples were not found"
    # the README's examples read the shared data from ../shared/data/beir; here it is wherever the data dir is
    script = "\n".join(examples).replace('"../shared/data/beir"', repr(str(beir_data_dir)))
    (tmp_path / "readme.py").write_text(script, encoding="utf-8")
    (tmp_path / "models").symlink_to(ROOT / "models")  # the published models, as from the repository's root
    done = subprocess.run(
        [sys.executable, "readme.py"], cwd=tmp_path, capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    # each `print(...)  # <what it prints>` comment of the README is checked where it is exact
    assert "RetrievalDataset(name='scifact', split='test', docs=5183, queries=1109, judged_queries=300)" in printed
    assert "+0.0721 (95% CI +0.0481 to +0.0965, p < 0.001, 300 queries)" in printed
    assert (tmp_path / "runs" / "scifact-rrf.trec").is_file()
