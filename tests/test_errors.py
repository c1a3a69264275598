"""One exception tree: every error the product raises on purpose is a RemediumError, and every
ApplicationError type that crosses Temporal is named in remedium.errors.ErrorType."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from remedium.errors import ErrorType, RemediumError

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("remedium", "activities", "workflows")


def _product_files() -> list[Path]:
    files = [path for room in PRODUCT for path in sorted((REPO / room).rglob("*.py"))]
    return [path for path in files if "demo" not in path.relative_to(REPO).parts]


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def test_every_product_exception_derives_from_remedium_error() -> None:
    seen, stray = [], []
    for path in _product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            cls = getattr(importlib.import_module(_module(path)), node.name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                seen.append(cls)
                if not issubclass(cls, RemediumError):
                    stray.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.name}")
    assert stray == []
    assert len(seen) > 15  # the scan found the tree, not nothing


def test_application_error_types_are_named_once() -> None:
    known = {value for name, value in vars(ErrorType).items() if name.isupper() and isinstance(value, str)}
    loose = []
    used = set()
    for path in _product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApplicationError"):
                continue
            for keyword in node.keywords:
                if keyword.arg != "type":
                    continue
                value = keyword.value
                if isinstance(value, ast.Attribute) and getattr(value.value, "id", None) == "ErrorType":
                    used.add(getattr(ErrorType, value.attr))
                elif isinstance(value, ast.Constant | ast.JoinedStr | ast.BinOp):
                    # a name typed in place; names held in variables come from ErrorType too
                    loose.append(f"{path.relative_to(REPO)}:{node.lineno}: type={ast.unparse(value)}")
    assert loose == []
    assert used <= known
    assert {ErrorType.INVALID_PARAMS, ErrorType.KUBERNETES_NOT_CONFIGURED} <= used
