"""Write environment.yml (conda) from requirements.lock so both carry the same pins.

Run after changing requirements.lock: .venv/bin/python scripts/write_environment_yml.py
(tests/unit/test_packaging.py fails while they disagree).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render(lock_text: str) -> str:
    pins = [line.strip() for line in lock_text.splitlines() if line.strip() and not line.startswith("#")]
    lines = [
        "# Conda environment for eks-mirror-runbook. Generated from requirements.lock by",
        "# scripts/write_environment_yml.py: the same pins, installed by pip inside conda.",
        "name: eks-mirror-runbook",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        *[f"      - {pin}" for pin in pins],
        "      - -e .",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    (ROOT / "environment.yml").write_text(render((ROOT / "requirements.lock").read_text()))
