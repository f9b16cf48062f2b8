"""Which identifiers are "the same variable": a small scope resolver for rename.

Rename masks every occurrence of a symbol together, so the occurrences must be right: a
function's parameters and locals belong to that function, a name the function does not bind
comes from the enclosing scope (finally the module), and attribute names, keyword-argument
names, strings and comments are not occurrences at all.

The model is lexical and per name: collect every identifier spelled like the target, find the
scope each *binding* of the name lands in, then resolve every use by walking outwards to the
first scope that binds the name.  Occurrences are the uses that resolve to the same scope as
the target.  Python follows its real rules (function-wide locals, class bodies invisible to
methods, global/nonlocal, comprehension scopes); JS/TS, Go and Rust get function and block
scopes with their declaration forms — enough to tell a local from a module-level name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from tree_sitter import Node

from .parse import Code, ParsedText, captures, has_node_type, identifier_node_at


def occurrences(code: Code, offset: int) -> list[tuple[int, int]]:
    """All in-scope occurrences (str spans, sorted) of the identifier at `offset`; [] if none."""
    parsed = code.parsed
    if parsed is None:
        return []
    target = identifier_node_at(parsed, max(0, min(offset, len(code.text))))
    if target is None or target.text in (b"_", None):
        return []
    rules = _RULES[parsed.language]
    if target.type not in rules.identifier_types or not rules.is_reference(target):
        return sorted({parsed.span(n) for n in rules.member_occurrences(parsed, target)})
    name = target.text
    named = [n for n in _identifiers(parsed, rules) if n.text == name]
    resolver = _Resolver(rules, named)
    scope = resolver.resolve(target)
    return sorted({parsed.span(n) for n in named if rules.is_reference(n) and resolver.resolve(n) == scope})


def _identifiers(parsed: ParsedText, rules: _ScopeRules) -> list[Node]:
    types = [t for t in rules.identifier_types if has_node_type(parsed.language, t)]
    query = "[" + " ".join(f"({t})" for t in types) + "] @id"
    return captures(parsed.language, query, parsed.root).get("id", [])


def _field(parent: Node, name: str, child: Node) -> bool:
    """Whether `child` is (one of) `parent`'s `name` field children."""
    return any(c == child for c in parent.children_by_field_name(name))


def _inside(node: Node, region: Node | None) -> bool:
    return region is not None and region.start_byte <= node.start_byte and node.end_byte <= region.end_byte


class _Resolver:
    """Binding scopes of one name, and resolution of its uses."""

    def __init__(self, rules: _ScopeRules, named: list[Node]) -> None:
        self.rules = rules
        # scope id -> [(first byte the binding is visible from, key)].  Most bindings cover their
        # whole scope (-1, the scope's id); a Rust `let` is visible only after itself and each
        # `let` is its own variable, so shadowing `let x = x + 1` tells the two apart.
        self.binders: dict[int, list[tuple[int, int]]] = {}
        self.declared: dict[int, str] = {}  # scope id -> "global" / "nonlocal" (python)
        for node in named:
            scope = rules.binding_scope(node)
            if scope is not None:
                after = rules.visible_after(node)
                key = scope.id if after is None else after.id
                self.binders.setdefault(scope.id, []).append((-1 if after is None else after.end_byte, key))
            declaration = rules.declaration(node)
            if declaration is not None:
                self.declared[rules.scope_of(node).id] = declaration
        self._cache: dict[int, int] = {}

    def resolve(self, node: Node) -> int:
        """Key of the variable `node` refers to: the id of the scope that binds it (the root when
        nothing does), or of the statement that introduced it for position-dependent bindings."""
        if node.id not in self._cache:
            self._cache[node.id] = self._resolve(node)
        return self._cache[node.id]

    def _resolve(self, node: Node) -> int:
        if self.rules.binding_scope(node) is not None:
            after = self.rules.visible_after(node)
            if after is not None:
                return after.id
        scope = self.rules.scope_of(node)
        first = True
        while True:
            parent = self.rules.parent_scope(scope)
            if parent is None:
                return scope.id
            if first or not self.rules.hides_from_nested(scope):
                declared = self.declared.get(scope.id)
                if declared == "global":
                    root = scope
                    while (up := self.rules.parent_scope(root)) is not None:
                        root = up
                    return root.id
                visible = [b for b in self.binders.get(scope.id, ()) if b[0] <= node.start_byte]
                if declared is None and visible:
                    return max(visible)[1]
            scope, first = parent, False


class _ScopeRules(ABC):
    """What is a scope, a binding and a reference in one language family."""

    identifier_types: tuple[str, ...] = ("identifier",)

    def is_reference(self, node: Node) -> bool:
        """Whether this identifier names a variable (not an attribute, keyword or module path)."""
        return True

    @abstractmethod
    def scope_of(self, node: Node) -> Node:
        """The innermost scope whose region holds `node`."""

    @abstractmethod
    def binding_scope(self, node: Node) -> Node | None:
        """The scope this identifier binds its name in, or None when it is a use."""

    def declaration(self, node: Node) -> str | None:
        return None

    def visible_after(self, node: Node) -> Node | None:
        """For a binding visible only after some statement (Rust `let`): that statement."""
        return None

    def hides_from_nested(self, scope: Node) -> bool:
        return False

    def parent_scope(self, scope: Node) -> Node | None:
        return None if scope.parent is None else self.scope_of(scope)

    def member_occurrences(self, parsed: ParsedText, node: Node) -> list[Node]:
        return []

    def _function_scope(self, scope: Node, function_types: frozenset[str]) -> Node:
        while scope.type not in function_types and scope.parent is not None:
            scope = self.scope_of(scope)
        return scope


# ---------------------------------------------------------------------------------------------
# Python

_PY_COMPREHENSIONS = frozenset({"list_comprehension", "set_comprehension", "dictionary_comprehension",
                                "generator_expression"})
_PY_TARGET_WRAPPERS = frozenset({"pattern_list", "tuple_pattern", "list_pattern", "list_splat_pattern",
                                 "tuple", "list", "parenthesized_expression", "as_pattern_target",
                                 "expression_list"})
_PY_PARAMETER_LISTS = frozenset({"parameters", "lambda_parameters"})


class _PythonRules(_ScopeRules):
    def is_reference(self, node: Node) -> bool:
        parent = node.parent
        if parent is None:
            return False
        if parent.type == "attribute":
            return not _field(parent, "attribute", node)
        if parent.type == "keyword_argument":
            return not _field(parent, "name", node)
        if parent.type == "dotted_name":
            holder = parent.parent
            if holder is not None and holder.type in ("aliased_import", "relative_import"):
                return False  # `import a.b as c`, `from .m import x`: module paths, not names here
            if holder is not None and holder.type == "import_from_statement" and _field(holder, "module_name", parent):
                return False
            return parent.children[0] == node  # `import a.b` binds `a`; later parts are attributes
        if parent.type == "aliased_import":
            return _field(parent, "alias", node)
        return True

    def scope_of(self, node: Node) -> Node:
        child, scope = node, node.parent
        while scope is not None:
            kind = scope.type
            if kind in ("function_definition", "lambda"):
                # Defaults, annotations and the def's own name are evaluated in the enclosing scope.
                if _field(scope, "body", child) or (_field(scope, "parameters", child) and self._is_parameter(node)):
                    return scope
            elif kind == "class_definition":
                if _field(scope, "body", child):
                    return scope
            elif kind in _PY_COMPREHENSIONS:
                # The first iterable is evaluated outside the comprehension.
                first_for = next((c for c in scope.children if c.type == "for_in_clause"), None)
                if not (child == first_for and _inside(node, first_for.child_by_field_name("right"))):
                    return scope
            elif scope.parent is None:
                return scope
            child, scope = scope, scope.parent
        return child

    def _is_parameter(self, node: Node) -> bool:
        parent = node.parent
        if parent is None:
            return False
        if parent.type in ("list_splat_pattern", "dictionary_splat_pattern"):
            parent = parent.parent
            if parent is None:
                return False
        if parent.type in _PY_PARAMETER_LISTS:
            return True
        if parent.type in ("default_parameter", "typed_default_parameter"):
            return _field(parent, "name", node)
        if parent.type == "typed_parameter":
            return not _inside(node, parent.child_by_field_name("type"))
        return False

    def binding_scope(self, node: Node) -> Node | None:
        parent = node.parent
        if parent is None:
            return None
        if self._is_parameter(node):
            return self.scope_of(node)
        if parent.type in ("function_definition", "class_definition") and _field(parent, "name", node):
            return self.scope_of(node)
        if parent.type == "named_expression" and _field(parent, "name", node):
            # PEP 572: a walrus inside a comprehension binds in the enclosing function.
            scope = self.scope_of(node)
            while scope.type in _PY_COMPREHENSIONS:
                scope = self.scope_of(scope)
            return scope
        if parent.type == "aliased_import":
            return self.scope_of(node) if _field(parent, "alias", node) else None
        if parent.type == "dotted_name":
            holder = parent.parent
            if (holder is not None and holder.type in ("import_statement", "import_from_statement")
                    and _field(holder, "name", parent) and parent.children[0] == node):
                return self.scope_of(node)
            return None
        child, holder = node, parent
        while holder is not None and holder.type in _PY_TARGET_WRAPPERS:
            child, holder = holder, holder.parent
        if holder is None:
            return None
        if holder.type in ("assignment", "augmented_assignment", "for_statement", "for_in_clause"):
            return self.scope_of(node) if _field(holder, "left", child) else None
        if holder.type == "as_pattern":
            return self.scope_of(node) if _field(holder, "alias", child) else None
        return None

    def declaration(self, node: Node) -> str | None:
        parent = node.parent
        if parent is not None and parent.type == "global_statement":
            return "global"
        if parent is not None and parent.type == "nonlocal_statement":
            return "nonlocal"
        return None

    def hides_from_nested(self, scope: Node) -> bool:
        # Names bound in a class body are not visible inside its methods.
        return scope.type == "class_definition"

    def member_occurrences(self, parsed: ParsedText, node: Node) -> list[Node]:
        return _self_attributes(parsed, node, "attribute", "object", "attribute", "self",
                                ("class_definition",))


def _self_attributes(parsed: ParsedText, node: Node, member_type: str, object_field: str,
                     name_field: str, receiver: str, class_types: tuple[str, ...]) -> list[Node]:
    """`self.x` / `this.x`: the same attribute of the receiver throughout the enclosing class."""
    member = node.parent
    if member is None or member.type != member_type or not _field(member, name_field, node):
        return []
    receiver_node = member.child_by_field_name(object_field)
    if receiver_node is None or receiver_node.text != receiver.encode():
        return []
    owner = member.parent
    while owner is not None and owner.type not in class_types:
        owner = owner.parent
    if owner is None:
        return []
    query = f"({member_type} {object_field}: (_) @object {name_field}: (_) @name)"
    found = []
    for match_node in captures(parsed.language, query, owner).get("name", []):
        parent = match_node.parent
        obj = parent.child_by_field_name(object_field) if parent is not None else None
        if match_node.text == node.text and obj is not None and obj.text == receiver_node.text:
            found.append(match_node)
    return found


# ---------------------------------------------------------------------------------------------
# JavaScript / TypeScript

_JS_FUNCTIONS = frozenset({"function_declaration", "function_expression", "function",
                           "generator_function_declaration", "generator_function", "arrow_function",
                           "method_definition"})
_JS_DECLARED_FUNCTIONS = frozenset({"function_declaration", "generator_function_declaration"})
_JS_BLOCKS = frozenset({"statement_block", "for_statement", "for_in_statement", "catch_clause", "class_body"})
_JS_PATTERNS = frozenset({"object_pattern", "array_pattern", "pair_pattern", "assignment_pattern",
                          "rest_pattern", "required_parameter", "optional_parameter"})


class _JavaScriptRules(_ScopeRules):
    identifier_types = ("identifier", "shorthand_property_identifier", "shorthand_property_identifier_pattern")

    def is_reference(self, node: Node) -> bool:
        parent = node.parent
        if parent is None:
            return False
        if parent.type == "import_specifier" and parent.child_by_field_name("alias") is not None:
            return _field(parent, "alias", node)  # `import {a as b}`: `a` names another module's export
        if parent.type == "export_specifier":
            return not _field(parent, "alias", node)
        if parent.type in ("jsx_opening_element", "jsx_closing_element", "jsx_self_closing_element"):
            return (node.text or b"x")[:1].isupper()  # <div> is a tag, <Foo> a component variable
        return True

    def scope_of(self, node: Node) -> Node:
        child, scope = node, node.parent
        while scope is not None:
            if scope.type in _JS_FUNCTIONS:
                if not (scope.type in _JS_DECLARED_FUNCTIONS and _field(scope, "name", child)):
                    return scope
            elif scope.type in _JS_BLOCKS or scope.parent is None:
                return scope
            child, scope = scope, scope.parent
        return child

    def binding_scope(self, node: Node) -> Node | None:
        child, holder = node, node.parent
        while holder is not None and holder.type in _JS_PATTERNS:
            if holder.type == "pair_pattern" and not _field(holder, "value", child):
                return None
            if holder.type == "assignment_pattern" and not _field(holder, "left", child):
                return None  # the default value is a use
            if holder.type in ("required_parameter", "optional_parameter") and not _field(holder, "pattern", child):
                return None
            child, holder = holder, holder.parent
        if holder is None:
            return None
        kind = holder.type
        if kind == "variable_declarator":
            if not _field(holder, "name", child):
                return None
            declaration = holder.parent
            if declaration is not None and declaration.type == "variable_declaration":  # `var` is function-wide
                return self._function_scope(self.scope_of(node), _JS_FUNCTIONS)
            return self.scope_of(node)
        if kind == "formal_parameters":
            return self.scope_of(node)
        if kind == "arrow_function":
            return self.scope_of(node) if _field(holder, "parameter", child) else None
        if kind in _JS_FUNCTIONS or kind in ("class_declaration", "class", "abstract_class_declaration"):
            return self.scope_of(node) if _field(holder, "name", child) else None
        if kind == "catch_clause":
            return self.scope_of(node) if _field(holder, "parameter", child) else None
        if kind == "for_in_statement":
            if not _field(holder, "left", child) or holder.child_by_field_name("kind") is None:
                return None  # `for (x of xs)` assigns an existing variable
            if holder.child_by_field_name("kind").type == "var":
                return self._function_scope(self.scope_of(node), _JS_FUNCTIONS)
            return self.scope_of(node)
        if kind in ("import_clause", "namespace_import"):
            return self._function_scope(self.scope_of(node), frozenset())
        if kind == "import_specifier":
            if holder.child_by_field_name("alias") is None or _field(holder, "alias", child):
                return self._function_scope(self.scope_of(node), frozenset())
        return None

    def member_occurrences(self, parsed: ParsedText, node: Node) -> list[Node]:
        return _self_attributes(parsed, node, "member_expression", "object", "property", "this",
                                ("class_declaration", "class", "abstract_class_declaration"))


# ---------------------------------------------------------------------------------------------
# Go

_GO_FUNCTIONS = frozenset({"function_declaration", "method_declaration", "func_literal"})
_GO_BLOCKS = frozenset({"block", "if_statement", "for_statement", "expression_switch_statement",
                        "type_switch_statement", "select_statement", "expression_case", "type_case",
                        "default_case", "communication_case"})


class _GoRules(_ScopeRules):
    def is_reference(self, node: Node) -> bool:
        # `T{name: v}`: a struct literal's key is a field name (a map literal's key is a value).
        element = node.parent
        keyed = element.parent if element is not None else None
        if element is None or element.type != "literal_element" or keyed is None or keyed.type != "keyed_element":
            return True
        if not _field(keyed, "key", element):
            return True
        literal = keyed.parent.parent if keyed.parent is not None else None
        literal_type = literal.child_by_field_name("type") if literal is not None else None
        return literal_type is not None and literal_type.type == "map_type"

    def scope_of(self, node: Node) -> Node:
        child, scope = node, node.parent
        while scope is not None:
            if scope.type in _GO_FUNCTIONS:
                if not _field(scope, "name", child):
                    return scope
            elif scope.type in _GO_BLOCKS or scope.parent is None:
                return scope
            child, scope = scope, scope.parent
        return child

    def binding_scope(self, node: Node) -> Node | None:
        parent = node.parent
        if parent is None:
            return None
        kind = parent.type
        if kind in ("parameter_declaration", "variadic_parameter_declaration", "var_spec", "const_spec",
                    "function_declaration"):
            return self.scope_of(node) if _field(parent, "name", node) else None
        if kind == "expression_list" and parent.parent is not None:
            holder = parent.parent
            if holder.type == "short_var_declaration" and _field(holder, "left", parent):
                return self.scope_of(node)
            if holder.type == "range_clause" and _field(holder, "left", parent) \
                    and any(c.type == ":=" for c in holder.children):
                return self.scope_of(node)
            if holder.type == "type_switch_statement" and _field(holder, "alias", parent):
                return self.scope_of(node)
            if holder.type == "receive_statement" and _field(holder, "left", parent):
                return self.scope_of(node)
        return None


# ---------------------------------------------------------------------------------------------
# Rust

_RUST_FUNCTIONS = frozenset({"function_item", "closure_expression"})
_RUST_SCOPES = frozenset({"block", "for_expression", "match_arm", "if_expression", "while_expression",
                          "mod_item", "impl_item", "trait_item"})
_RUST_PATTERNS = frozenset({"tuple_pattern", "tuple_struct_pattern", "slice_pattern", "ref_pattern",
                            "mut_pattern", "reference_pattern", "or_pattern", "captured_pattern",
                            "match_pattern"})
_RUST_PATHS = frozenset({"scoped_identifier", "scoped_type_identifier", "use_declaration", "use_list",
                         "use_as_clause", "scoped_use_list", "use_wildcard", "attribute"})


class _RustRules(_ScopeRules):
    def is_reference(self, node: Node) -> bool:
        parent = node.parent
        if parent is None or parent.type in _RUST_PATHS:
            return False  # `a::b` paths and `use` lists name items, not local variables
        if parent.type == "macro_invocation" and _field(parent, "macro", node):
            return False
        return True

    def scope_of(self, node: Node) -> Node:
        child, scope = node, node.parent
        while scope is not None:
            if scope.type in _RUST_FUNCTIONS:
                if not _field(scope, "name", child):
                    return scope
            elif scope.type == "for_expression":
                if not _field(scope, "value", child):  # the iterated value is outside the loop
                    return scope
            elif scope.type in _RUST_SCOPES or scope.parent is None:
                return scope
            child, scope = scope, scope.parent
        return child

    def binding_scope(self, node: Node) -> Node | None:
        child, holder = node, node.parent
        while holder is not None and holder.type in _RUST_PATTERNS:
            if holder.type == "tuple_struct_pattern" and _field(holder, "type", child):
                return None  # `Some(x)`: `Some` is a path
            child, holder = holder, holder.parent
        if holder is None:
            return None
        kind = holder.type
        in_pattern = child != node or kind in ("let_declaration", "parameter", "for_expression", "let_condition",
                                               "match_arm", "closure_parameters")
        if in_pattern and (node.text or b"a")[:1].isupper():
            return None  # `None`, `Empty`: by convention a constant or variant, not a new binding
        if kind in ("let_declaration", "parameter", "for_expression", "let_condition", "match_arm"):
            return self.scope_of(node) if _field(holder, "pattern", child) else None
        if kind == "closure_parameters":
            return self.scope_of(node)
        if kind in ("function_item", "const_item", "static_item"):
            return self.scope_of(node) if _field(holder, "name", child) else None
        return None

    def visible_after(self, node: Node) -> Node | None:
        holder = node.parent
        while holder is not None and holder.type in _RUST_PATTERNS:
            holder = holder.parent
        return holder if holder is not None and holder.type == "let_declaration" else None


_RULES: dict[str, _ScopeRules] = {
    "python": _PythonRules(),
    "javascript": _JavaScriptRules(),
    "typescript": _JavaScriptRules(),
    "tsx": _JavaScriptRules(),
    "go": _GoRules(),
    "rust": _RustRules(),
}
