"""Check a JSON request body against the JSON Schema of the route's own request model (vLLM's).

vLLM's request models accept unknown keys and drop them (``extra="allow"`` on the models, lenient
TypedDicts for messages and content parts), and a union branch meant for custom roles lets a user
message without ``content`` through. This walks the body beside the schema pydantic writes for the
model and reports, with their paths:

- a key that the object's schema does not declare (``messages[0].foo``, ``response_format.bar``,
  ``tools[0].function.oops``) — objects without declared properties are free-form (``logit_bias``,
  ``chat_template_kwargs``, a JSON schema) and are not looked into;
- a key that is missing although the union member chosen by the object's tag requires it
  (``messages[0].content`` of a user message). Elsewhere vLLM's own validation enforces required
  keys (400 in its own words); it is only through a union that a lenient member lets them pass.

Unions (``anyOf``/``oneOf``): a member whose property has a fixed value (``const`` / ``enum``) that the
body's value matches — the *tag*, e.g. ``"role": "user"`` or ``"type": "text"`` — is the member that
applies; a member that declares the tag property without fixing it (vLLM's custom-role message)
adds the keys it declares but does not decide what is required; members that do not declare the tag
at all do not apply. Without a tag every object member is tried. The body passes if one applicable
member reports nothing, else the member with the fewest problems is reported. A tag value no member
knows, and every type error, is left to vLLM's own validation (400 either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Keys vLLM's request model renames before it validates (``_normalize_messages_before``, the same in
# 0.26 .. 0.34): accepted wherever the new name is declared.
RENAMED_BEFORE_VALIDATION = {"reasoning": ("reasoning_content",)}
MAX_DEPTH = 32
MAX_PROBLEMS = 10


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # "unknown" | "missing"

    def __str__(self) -> str:
        return f"{self.path}: {'unknown field' if self.kind == 'unknown' else 'required field missing'}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class RequestSchema:
    """One route's request schema (``pydantic.TypeAdapter(model).json_schema()``)."""

    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self.defs = schema.get("$defs") or schema.get("definitions") or {}
        # Per schema object: resolved form, union members, applicable members per tag. A request of
        # thousands of messages meets the same few schema objects again and again. Each entry keeps
        # its key object alive, so an id is never reused for another object while cached.
        self._cache: dict[tuple, tuple[Any, Any]] = {}

    def _cached(self, kind: str, key_obj: Any, extra: Any, compute):
        key = (kind, id(key_obj), extra)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is key_obj:
            return hit[1]
        value = compute()
        self._cache[key] = (key_obj, value)
        return value

    def problems(self, body: Any) -> list[Problem]:
        return self._walk(body, self.schema, "", 0, False)[:MAX_PROBLEMS]

    # -- schema helpers ----------------------------------------------------------------------
    def _resolve(self, schema: Any) -> dict:
        if not isinstance(schema, dict):
            return {}
        return self._cached("resolve", schema, None, lambda: self._resolve_uncached(schema))

    def _resolve_uncached(self, schema: Any) -> dict:
        for _ in range(MAX_DEPTH):
            if not isinstance(schema, dict):
                return {}
            ref = schema.get("$ref")
            if isinstance(ref, str):
                schema = self.defs.get(ref.rsplit("/", 1)[-1], {})
                continue
            all_of = schema.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1:
                schema = all_of[0]
                continue
            return schema
        return {}

    def _members(self, schema: dict) -> list[dict] | None:
        """The flattened members of a union schema, or None when it is not a union."""
        return self._cached("members", schema, None, lambda: self._members_uncached(schema))

    def _members_uncached(self, schema: dict) -> list[dict] | None:
        members = schema.get("anyOf") or schema.get("oneOf")
        if not isinstance(members, list):
            return None
        out: list[dict] = []
        for member in members:
            member = self._resolve(member)
            nested = self._members(member)
            out.extend(nested if nested is not None else [member])
        return out

    def _fixed(self, prop: Any) -> list | None:
        """The values a property schema allows, when it fixes them (``const``/``enum``)."""
        prop = self._resolve(prop)
        if "const" in prop:
            return [prop["const"]]
        enum = prop.get("enum")
        return list(enum) if isinstance(enum, list) else None

    # -- the walk ----------------------------------------------------------------------------
    def _walk(self, value: Any, schema: Any, path: str, depth: int, required: bool) -> list[Problem]:
        """Problems of ``value`` under ``schema``; ``required``: report missing required keys too."""
        if depth > MAX_DEPTH:
            return []
        schema = self._resolve(schema)
        members = self._members(schema)
        if members is not None:
            return self._union(value, members, path, depth)
        if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
            return self._object(value, schema, path, depth, required)
        if isinstance(value, list) and schema.get("type") == "array":
            return self._array(value, schema, path, depth)
        return []

    def _object(self, value: dict, schema: dict, path: str, depth: int, required: bool) -> list[Problem]:
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        problems: list[Problem] = []
        if not isinstance(props, dict):  # free-form: look only at typed values, if any
            if isinstance(extra, dict):
                for key, item in value.items():
                    problems += self._walk(item, extra, _join(path, str(key)), depth + 1, False)
            return problems
        allowed = set(props) | {old for new in props for old in RENAMED_BEFORE_VALIDATION.get(new, ())}
        for key in value:
            if key not in allowed and not isinstance(extra, dict):
                problems.append(Problem(_join(path, str(key)), "unknown"))
        for key in schema.get("required") or () if required else ():
            if key not in value:
                problems.append(Problem(_join(path, key), "missing"))
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None and len(problems) < MAX_PROBLEMS:
                problems += self._walk(item, sub, _join(path, str(key)), depth + 1, False)
        return problems

    def _array(self, value: list, schema: dict, path: str, depth: int) -> list[Problem]:
        problems: list[Problem] = []
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        for i, item in enumerate(value):
            sub = prefix[i] if isinstance(prefix, list) and i < len(prefix) else items
            if isinstance(sub, dict):
                problems += self._walk(item, sub, f"{path}[{i}]", depth + 1, False)
            if len(problems) >= MAX_PROBLEMS:
                break
        return problems

    def _union(self, value: Any, members: list[dict], path: str, depth: int) -> list[Problem]:
        tagged = False
        if isinstance(value, dict):
            objects = self._cached(
                "objects", members, None, lambda: [m for m in members if m.get("type") == "object" or "properties" in m]
            )
            candidates, tagged = self._applicable(value, objects)
        elif isinstance(value, list):
            candidates = [m for m in members if m.get("type") == "array"]
        else:
            return []
        best: list[Problem] | None = None
        for member in candidates:
            problems = self._walk(value, member, path, depth, tagged)
            if not problems:
                return []
            if best is None or len(problems) < len(best):
                best = problems
        return best or []

    def _applicable(self, value: dict, members: list[dict]) -> tuple[list[dict], bool]:
        """The union members that apply to ``value`` (see the module docstring), and whether they
        were chosen by a tag (then they decide what is required)."""
        tag_keys = self._cached("tag_keys", members, None, lambda: self._tag_keys(members))
        tags = sorted(key for key in tag_keys if key in value)
        if not tags:
            return members, False
        tag_values = tuple((key, value[key]) for key in tags)
        try:
            key = ("applicable", id(members), tag_values)
            hit = self._cache.get(key)
        except TypeError:  # an unhashable tag value: no member fixes that
            return self._applicable_for(value, members, tags)
        if hit is not None and hit[0] is members:
            return hit[1]
        result = self._applicable_for(value, members, tags)
        if result[1]:  # only values the schema names are cached: clients cannot grow the cache
            self._cache[key] = (members, result)
        return result

    def _tag_keys(self, members: list[dict]) -> set[str]:
        return {
            key
            for member in members
            for key, prop in (member.get("properties") or {}).items()
            if self._fixed(prop) is not None
        }

    def _applicable_for(self, value: dict, members: list[dict], tags: list[str]) -> tuple[list[dict], bool]:
        tagged, open_members = [], []
        for member in members:
            props = member.get("properties") or {}
            declared = [key for key in tags if key in props]
            if not declared:
                continue  # does not apply to a value with this tag
            fixed = {key: self._fixed(props[key]) for key in declared}
            if all(values is None for values in fixed.values()):
                open_members.append(member)
            elif all(values is None or value[key] in values for key, values in fixed.items()):
                tagged.append(member)
        if not tagged:
            return open_members, False  # none for an unknown tag value: vLLM answers that one
        merged = []
        for member in tagged:
            props: dict = {}
            for other in open_members:
                props.update(other.get("properties") or {})
            props.update(member.get("properties") or {})
            merged.append({**member, "properties": props})
        return merged, True
