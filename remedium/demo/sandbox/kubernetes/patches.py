"""The three PATCH flavours the apiserver accepts for built-in types.

Strategic merge patch is the Kubernetes dialect of JSON merge patch: maps merge, `null`
deletes, and lists named in the API schema with a merge key (`containers` by `name`,
`ports` by `containerPort`, ...) merge element-wise instead of being replaced. Only the
directives kubectl and our actions send are understood (`$patch: replace|delete`,
`$setElementOrder/...`, `$retainKeys`, `$deleteFromPrimitiveList/...`).
"""

from __future__ import annotations

import copy
from typing import Any

from remedium.demo.sandbox.kubernetes.errors import ApiError, bad_request

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# field name -> merge key, as the API schema declares `patchMergeKey` (for the types we serve)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "conditions": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
}
MERGED_PRIMITIVE_LISTS = {"finalizers"}


def apply_patch(content_type: str, target: Any, patch: Any) -> Any:
    media = content_type.split(";")[0].strip().lower()
    if media == STRATEGIC:
        _expect_object(patch)
        return strategic_merge(target, patch)
    if media == MERGE:
        _expect_object(patch)
        return merge_patch(target, patch)
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        return json_patch(target, patch)
    raise ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        f"{JSON_PATCH}, {MERGE}, {STRATEGIC}",
        "UnsupportedMediaType",
    )


def _expect_object(patch: Any) -> None:
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    existing = copy.deepcopy(current) if isinstance(current, list) else []
    if field in MERGED_PRIMITIVE_LISTS:
        return existing + [v for v in patch if v not in existing]
    key = MERGE_KEYS.get(field)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return [item for item in copy.deepcopy(patch) if not (isinstance(item, dict) and item.get("$patch"))]
    for item in patch:
        if item.get("$patch") == "replace":
            return [
                {k: v for k, v in i.items() if k != "$patch"} for i in patch if i.get("$patch") != "delete"
            ]
        index = next(
            (i for i, e in enumerate(existing) if isinstance(e, dict) and e.get(key) == item.get(key)), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                existing.pop(index)
        elif index is None:
            existing.append(strategic_merge({}, item, field))
        else:
            existing[index] = strategic_merge(existing[index], item, field)
    return existing


# ------------------------------------------------------------------ RFC 6902


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _unprocessable(f'JSON pointer "{pointer}" does not start with "/"')
    return [_unescape(t) for t in pointer[1:].split("/")]


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message, "Invalid")


def _parent(doc: Any, tokens: list[str], op: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise _unprocessable(f"{op} operation does not apply: doc is missing path: /{'/'.join(tokens)}")
    return node, tokens[-1]


def _get(doc: Any, pointer: str, op: str) -> Any:
    tokens = _split(pointer)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, op)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _unprocessable(f"{op} operation does not apply: doc is missing path: {pointer}")


def _remove(doc: Any, pointer: str, op: str) -> Any:
    parent, last = _parent(doc, _split(pointer), op)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _unprocessable(f"{op} operation does not apply: doc is missing path: {pointer}")


def _add(doc: Any, pointer: str, value: Any, replace: bool = False) -> Any:
    tokens = _split(pointer)
    if not tokens:
        return copy.deepcopy(value)
    op = "replace" if replace else "add"
    parent, last = _parent(doc, tokens, op)
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise _unprocessable(f"replace operation does not apply: doc is missing key: {pointer}")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = copy.deepcopy(value)
            else:
                parent.insert(int(last), copy.deepcopy(value))
        else:
            raise _unprocessable(f"{op} operation does not apply: index out of range: {pointer}")
    else:
        raise _unprocessable(f"{op} operation does not apply: doc is missing path: {pointer}")
    return doc


def json_patch(target: Any, operations: list[Any]) -> Any:
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise bad_request(f'{op} operation missing "value"')
        if op == "add":
            doc = _add(doc, path, operation["value"])
        elif op == "replace":
            doc = _add(doc, path, operation["value"], replace=True)
        elif op == "remove":
            _remove(doc, path, "remove")
        elif op == "test":
            if _get(doc, path, "test") != operation["value"]:
                raise _unprocessable(f"testing value {path} failed: test failed")
        elif op in ("move", "copy"):
            value = _get(doc, operation.get("from", ""), op)
            if op == "move":
                _remove(doc, operation["from"], op)
            doc = _add(doc, path, value)
        else:
            raise bad_request(f"Unexpected kind: {op}")
    return doc
