"""The iris example's requirements file, which the README's `nimbus environment create` line reads."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_the_iris_requirements_pin_what_the_platform_tests_with():
    example = pins(ROOT / "examples" / "iris" / "requirements.txt")
    assert set(example) == {"scikit-learn", "matplotlib"}
    platform = pins(ROOT / "requirements-dev.txt")
    assert {name: platform[name] for name in example} == example
