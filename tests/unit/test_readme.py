"""The README's commands are ones a newcomer can follow in order."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_wheel_the_readme_uploads_is_built_before_it_in_dist() -> None:
    lines = README.read_text().splitlines()
    upload = next(i for i, line in enumerate(lines) if line.startswith("netdist-admin upload-package "))
    uploaded = re.findall(r"dist/(\w+)-[\w.]+-py3-none-any\.whl", lines[upload])
    built = " ".join(line for line in lines[:upload] if line.startswith("pip wheel ") and "-w dist" in line)
    assert uploaded, lines[upload]
    for name in uploaded:
        assert re.search(rf"(\./|\s){name}(==|\s)", built), f"{name} is uploaded but no 'pip wheel' line builds it"
