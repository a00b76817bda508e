#!/usr/bin/env python3
"""Static checks of the Terraform code under terraform/, needing no provider.

`terraform validate` cannot run where no provider can be downloaded, so this
checker parses every .tf file with python-hcl2 and checks, per module
directory:

  * every var.X is a declared variable, and every declared variable is used;
  * every local.X is defined, and every defined local is used;
  * every data.T.N and every resource reference T.N (T of a provider the
    module requires) names a block declared in the same module;
  * every resource and data type belongs to a provider in required_providers;
  * every module block has a local source path that exists, passes only
    declared variables and every variable without a default;
  * every module.M.Y names a module block M whose source declares output Y;
  * every templatefile(path, vars) names an existing file under
    ${path.module}, every template variable used in it is passed and every
    passed one is used; every template file in a templates/ folder is used;
  * every file(path) under ${path.module} exists;

and that the deployment guide (terraform/README.md) has a row for each
variable of the module it documents, with the same type and default as
variables.tf, and a row for each output, and no rows for anything else.

Usage: check_references.py [TERRAFORM_DIR]   (default: the folder above this
file). Prints each problem, then `terraform checks: N files, M references,
K problems`; exits 1 when K > 0 (a file that does not parse is a problem),
2 when python-hcl2 is missing or the folder does not exist.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

try:
    import hcl2
    from hcl2.utils import SerializationOptions
except ImportError:  # pragma: no cover - reported, not tested
    sys.stderr.write("check_references.py needs python-hcl2 (pip install python-hcl2)\n")
    sys.exit(2)

# Module directory (relative to the terraform folder) -> guide documenting it.
GUIDES = {"modules/distributedlog": "README.md"}

MODULE_META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on"}
TEMPLATE_KEYWORDS = {"true", "false", "null", "for", "in", "if", "else", "endif", "endfor"}
REF_RE = re.compile(r"(?<![\w.\-])(var|local|module|data)\.([A-Za-z_][\w-]*)")
ATTR_RE = re.compile(r"\.([A-Za-z_][\w-]*)")
RESOURCE_RE = re.compile(r"(?<![\w.\-])([a-z][a-z0-9]*)_([a-z0-9_]+)\.([A-Za-z_][\w-]*)")
IDENT_RE = re.compile(r"(?<![\w.\-])([A-Za-z_][\w-]*)")
FOR_RE = re.compile(r"\bfor\s+([A-Za-z_][\w-]*)(?:\s*,\s*([A-Za-z_][\w-]*))?\s+in\b")


class ParseError(Exception):
    pass


# --------------------------------------------------------------------------
# Expression text scanning. python-hcl2 gives an expression as "${...}", a
# string template as "\"...\"" (interpolations kept inside), and a bare
# keyword or type as plain text.


def _skip_string(s: str, i: int, interps: list[str] | None) -> int:
    """s[i] is just after an opening quote: return the index after the
    closing quote, collecting the text of each ${...} / %{...} inside."""
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        if s.startswith("$${", i) or s.startswith("%%{", i):
            i += 3
            continue
        if s.startswith("${", i) or s.startswith("%{", i):
            j = _match_brace(s, i + 1)
            if interps is not None:
                interps.append(s[i + 2 : j])
            i = j + 1
            continue
        i += 1
    raise ParseError("unterminated string in expression: " + s[:80])


def _match_brace(s: str, i: int) -> int:
    """s[i] is an opening brace: return the index of its closing brace."""
    depth = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            i = _skip_string(s, i + 1, None)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ParseError("unbalanced braces in expression: " + s[:80])


def code_fragments(expr: str) -> list[str]:
    """The code of an expression with the text of its string literals
    blanked, followed by the code of every interpolation inside them."""
    out: list[str] = []
    buf: list[str] = []
    interps: list[str] = []
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c == '"':
            i = _skip_string(expr, i + 1, interps)
            buf.append('""')
            continue
        buf.append(c)
        i += 1
    out.append("".join(buf))
    for inner in interps:
        out.extend(code_fragments(_strip_directive(inner)))
    return out


def _strip_directive(inner: str) -> str:
    inner = inner.strip().strip("~").strip()
    m = re.match(r"for\s+[\w-]+(?:\s*,\s*[\w-]+)?\s+in\s+(.*)$", inner, re.S)
    if m:
        return m.group(1)
    m = re.match(r"if\s+(.*)$", inner, re.S)
    if m:
        return m.group(1)
    if inner in ("else", "endif", "endfor"):
        return ""
    return inner


def value_fragments(value: str) -> list[str]:
    """Code fragments of one string value as python-hcl2 returns it."""
    if value.startswith("${") and value.endswith("}"):
        return code_fragments(value[2:-1])
    return code_fragments(value)


def template_interpolations(text: str) -> list[str]:
    """The inside of every ${...} and %{...} of a template text."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("$${", i) or text.startswith("%%{", i):
            i += 3
            continue
        if text.startswith("${", i) or text.startswith("%{", i):
            j = _match_brace(text, i + 1)
            out.append(text[i + 2 : j])
            i = j + 1
            continue
        i += 1
    return out


def find_calls(expr: str, name: str) -> list[list[str]]:
    """Arguments (raw text) of every call of function `name` in expr,
    including calls inside interpolations of its strings."""
    calls = []
    interps: list[str] = []
    i = 0
    n = len(expr)
    pat = re.compile(r"(?<![\w.\-])" + re.escape(name) + r"\s*\(")
    while i < n:
        c = expr[i]
        if c == '"':
            i = _skip_string(expr, i + 1, interps)
            continue
        m = pat.match(expr, i)
        if m:
            args, _end = _split_args(expr, m.end() - 1)
            calls.append(args)
            i = m.end()
            continue
        i += 1
    for inner in interps:
        calls.extend(find_calls(inner, name))
    return calls


def _split_args(s: str, i: int) -> tuple[list[str], int]:
    """s[i] is '(' or '{': split what it encloses at top-level commas (and,
    for braces, newlines). Returns (parts, index of the closing bracket)."""
    closer = {"(": ")", "{": "}", "[": "]"}[s[i]]
    separators = {",", "\n"} if closer == "}" else {","}
    parts = []
    depth = 0
    start = i + 1
    j = i + 1
    n = len(s)
    while j < n:
        c = s[j]
        if c == '"':
            j = _skip_string(s, j + 1, None)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                if c != closer:
                    raise ParseError("mismatched brackets: " + s[i : i + 80])
                parts.append(s[start:j].strip())
                return [p for p in parts if p], j
            depth -= 1
        elif c in separators and depth == 0:
            parts.append(s[start:j].strip())
            start = j + 1
        j += 1
    raise ParseError("unclosed bracket: " + s[i : i + 80])


def unquote(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def render_value(v) -> str:
    """A variable's type or default as the guide's table shows it."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        if v.startswith("${") and v.endswith("}"):
            return v[2:-1]
        return v
    if isinstance(v, list):
        return "[" + ", ".join(render_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [(k, x) for k, x in v.items() if not k.startswith("__")]
        if not items:
            return "{}"
        return "{ " + ", ".join(f"{unquote(k)} = {render_value(x)}" for k, x in items) + " }"
    return str(v)


# --------------------------------------------------------------------------
# Module model


@dataclass
class Block:
    kind: str  # variable, locals, output, resource, data, module, terraform, provider
    address: str
    file: str
    body: object
    line: int = 1


@dataclass
class Module:
    path: str  # absolute directory
    rel: str  # relative to the terraform folder
    files: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    variables: dict = field(default_factory=dict)
    locals: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    resources: set = field(default_factory=set)
    data: set = field(default_factory=set)
    modules: dict = field(default_factory=dict)
    providers: set = field(default_factory=set)


class Checker:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.problems: list[str] = []
        self.references = 0
        self.files = 0
        self.modules: dict[str, Module] = {}
        self.used_templates: set[str] = set()
        self.lines: dict[str, list[str]] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def rel(self, path: str) -> str:
        return os.path.relpath(path, os.path.dirname(self.root))

    # ---------------------------------------------------------- loading --

    def load(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            tf_files = sorted(f for f in filenames if f.endswith(".tf"))
            if not tf_files:
                continue
            mod = Module(path=dirpath, rel=os.path.relpath(dirpath, self.root))
            self.modules[os.path.normpath(dirpath)] = mod
            for name in tf_files:
                self.load_file(mod, os.path.join(dirpath, name))

    def load_file(self, mod: Module, path: str) -> None:
        self.files += 1
        mod.files.append(path)
        where = self.rel(path)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            # Comments dropped; heredocs turned into ordinary quoted strings.
            options = SerializationOptions(with_comments=False, preserve_heredocs=False)
            doc = hcl2.loads(text, serialization_options=options)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a problem
            self.problem(where, f"cannot parse: {exc}".splitlines()[0])
            return
        self.lines[where] = text.splitlines()
        for kind, entries in doc.items():
            if kind.startswith("__"):
                continue
            for entry in entries:
                self.add_block(mod, where, kind, entry)

    def add_block(self, mod: Module, where: str, kind: str, entry: dict) -> None:
        def add(address, body, header, table=None, key=None):
            line = self.find_line(where, header)
            block = Block(kind, address, where, body, line)
            if table is not None:
                if key in table:
                    self.problem(self.at(block), f"{address} is declared twice in {mod.rel}")
                if isinstance(table, set):
                    table.add(key)
                else:
                    table[key] = body
            mod.blocks.append(block)

        items = [(k, v) for k, v in entry.items() if not k.startswith("__")]
        if kind in ("variable", "output", "module"):
            table = {"variable": mod.variables, "output": mod.outputs, "module": mod.modules}[kind]
            for name, body in items:
                name = unquote(name)
                add(f"{kind}.{name}", body, rf'^\s*{kind}\s+"{re.escape(name)}"', table, name)
        elif kind == "locals":
            for name, value in items:
                add(f"local.{name}", value, rf"^\s*{re.escape(name)}\s*=", mod.locals, name)
        elif kind in ("resource", "data"):
            table = mod.resources if kind == "resource" else mod.data
            prefix = "data." if kind == "data" else ""
            for rtype, named in items:
                rtype = unquote(rtype)
                for rname, body in named.items():
                    if rname.startswith("__"):
                        continue
                    rname = unquote(rname)
                    header = rf'^\s*{kind}\s+"{re.escape(rtype)}"\s+"{re.escape(rname)}"'
                    add(f"{prefix}{rtype}.{rname}", body, header, table, (rtype, rname))
        elif kind == "terraform":
            for rp in entry.get("required_providers", []):
                mod.providers.update(p for p in rp if not p.startswith("__"))
            add("terraform", entry, r"^\s*terraform\s*\{")
        elif kind == "provider":
            for pname, body in items:
                pname = unquote(pname)
                add(f"provider.{pname}", body, rf'^\s*provider\s+"{re.escape(pname)}"')
        else:
            self.problem(where, f"unknown top-level block kind {kind!r}")

    def find_line(self, file: str, pattern: str, start: int = 1) -> int:
        """1-based number of the first line from `start` matching pattern."""
        lines = self.lines.get(file, [])
        rx = re.compile(pattern)
        for i in range(max(start, 1) - 1, len(lines)):
            if rx.search(lines[i]):
                return i + 1
        return start

    def at(self, block: Block, needle: str | None = None) -> str:
        """file:line of a block, or of the first line in it holding needle."""
        line = block.line
        if needle:
            line = self.find_line(block.file, re.escape(needle), block.line)
        return f"{block.file}:{line} ({block.address})"

    # ---------------------------------------------------------- checking --

    def run(self) -> None:
        self.load()
        if not self.modules:
            # A wrong path or an emptied tree must not pass as "no problems".
            self.problem(self.rel(self.root), "no .tf files found: nothing to check")
            return
        for mod in self.modules.values():
            self.check_module(mod)
        self.check_unused_templates()
        for rel_dir, guide in GUIDES.items():
            self.check_guide(os.path.join(self.root, rel_dir), os.path.join(self.root, guide))

    def check_module(self, mod: Module) -> None:
        used_vars: set[str] = set()
        used_locals: set[str] = set()
        for block in mod.blocks:
            for value in iter_strings(block.body):
                try:
                    for frag in value_fragments(value):
                        self.check_fragment(mod, block, frag, used_vars, used_locals)
                    self.check_calls(mod, block, value)
                except ParseError as exc:
                    self.problem(self.at(block), str(exc))
            if block.kind == "module":
                self.check_module_call(mod, block)
        for name in sorted(set(mod.variables) - used_vars):
            self.problem(self.at(self.block_of(mod, f"variable.{name}")), f"variable {name!r} is declared but never used")
        for name in sorted(set(mod.locals) - used_locals):
            self.problem(self.at(self.block_of(mod, f"local.{name}")), f"local {name!r} is defined but never used")
        for rtype, rname in sorted(mod.resources | mod.data):
            provider = rtype.split("_", 1)[0]
            if provider not in mod.providers and rtype != "terraform_data":
                block = self.block_of(mod, f"{rtype}.{rname}") or self.block_of(mod, f"data.{rtype}.{rname}")
                self.problem(self.at(block), f"{rtype} needs provider {provider!r} in required_providers of {mod.rel}")

    @staticmethod
    def block_of(mod: Module, address: str):
        return next((b for b in mod.blocks if b.address == address), None)

    def check_fragment(self, mod, block, frag, used_vars, used_locals) -> None:
        for m in REF_RE.finditer(frag):
            kind, name = m.group(1), m.group(2)
            attr = attribute_after(frag, m.end())
            needle = f"{kind}.{name}"
            self.references += 1
            if kind == "var":
                if name not in mod.variables:
                    self.problem(self.at(block, needle), f"var.{name} is not a declared variable of {mod.rel}")
                if block.kind != "variable":
                    used_vars.add(name)
            elif kind == "local":
                if name not in mod.locals:
                    self.problem(self.at(block, needle), f"local.{name} is not defined in {mod.rel}")
                if block.address != f"local.{name}":
                    used_locals.add(name)
            elif kind == "data":
                if attr is None or (name, attr) not in mod.data:
                    self.problem(self.at(block, needle), f"data.{name}.{attr} is not declared in {mod.rel}")
            elif kind == "module":
                self.check_module_output(mod, block, name, attr)
        for m in RESOURCE_RE.finditer(frag):
            provider, rest, name = m.group(1), m.group(2), m.group(3)
            if provider not in mod.providers:
                continue
            self.references += 1
            rtype = f"{provider}_{rest}"
            if (rtype, name) not in mod.resources:
                needle = f"{rtype}.{name}"
                self.problem(self.at(block, needle), f"{needle} is not a resource declared in {mod.rel}")

    def check_module_output(self, mod, block, name, attr) -> None:
        call = mod.modules.get(name)
        needle = f"module.{name}"
        if call is None:
            self.problem(self.at(block, needle), f"module.{name} is not a module block of {mod.rel}")
            return
        if attr is None:
            return  # the whole module object, e.g. in depends_on
        target = self.module_target(mod, call)
        if target is not None and attr not in target.outputs:
            self.problem(self.at(block, f"{needle}.{attr}"), f"module.{name}.{attr}: {target.rel} declares no output {attr!r}")

    def module_target(self, mod: Module, call: dict):
        source = unquote(call.get("source", ""))
        if not isinstance(source, str) or not source.startswith(("./", "../")):
            return None
        return self.modules.get(os.path.normpath(os.path.join(mod.path, source)))

    def check_module_call(self, mod: Module, block: Block) -> None:
        call = block.body
        source = unquote(call.get("source"))
        self.references += 1
        if not isinstance(source, str):
            self.problem(self.at(block), "module block without a literal source")
            return
        if not source.startswith(("./", "../")):
            return  # registry or remote source: nothing on disk to check
        target = self.modules.get(os.path.normpath(os.path.join(mod.path, source)))
        if target is None:
            self.problem(self.at(block, "source"), f"module source {source!r} is not a folder with .tf files")
            return
        passed = {k for k in call if not k.startswith("__") and k not in MODULE_META_ARGS}
        for arg in sorted(passed):
            self.references += 1
            if arg not in target.variables:
                self.problem(self.at(block, arg), f"argument {arg!r} is not a variable of {target.rel}")
        for name, body in sorted(target.variables.items()):
            if "default" not in body and name not in passed:
                self.problem(self.at(block), f"required variable {name!r} of {target.rel} is not passed")

    # ------------------------------------------------ templatefile, file --

    def check_calls(self, mod: Module, block: Block, value: str) -> None:
        expr = value[2:-1] if value.startswith("${") and value.endswith("}") else value
        template_calls = find_calls(expr, "templatefile")
        file_calls = find_calls(expr, "file")
        if not template_calls and not file_calls:
            return
        where = self.at(block, "templatefile(" if template_calls else "file(")
        for args in template_calls:
            self.references += 1
            if len(args) != 2:
                self.problem(where, f"templatefile takes 2 arguments, got {len(args)}")
                continue
            path = self.module_path(mod, where, args[0], "templatefile")
            if path is None:
                continue
            self.used_templates.add(path)
            if not os.path.isfile(path):
                self.problem(where, f"template {self.rel(path)} does not exist")
                continue
            passed = self.object_keys(mod, args[1])
            if passed is None:
                self.problem(where, f"cannot tell which variables are passed to {self.rel(path)}: {args[1][:60]}")
                continue
            self.check_template(path, where, passed)
        for args in file_calls:
            self.references += 1
            if len(args) != 1:
                self.problem(where, f"file takes 1 argument, got {len(args)}")
                continue
            path = self.module_path(mod, where, args[0], "file")
            if path is not None and not os.path.isfile(path):
                self.problem(where, f"file {self.rel(path)} does not exist")

    def module_path(self, mod, where, arg, func):
        text = unquote(arg.strip())
        if not text.startswith("${path.module}/"):
            self.problem(where, f"{func} path must start with ${{path.module}}/: {arg}")
            return None
        rest = text[len("${path.module}/") :]
        if "${" in rest:
            self.problem(where, f"{func} path is not static: {arg}")
            return None
        return os.path.normpath(os.path.join(mod.path, rest))

    def object_keys(self, mod: Module, expr: str):
        """Keys of an object expression: a literal, local.X or merge(...)."""
        expr = expr.strip()
        if expr.startswith("${") and expr.endswith("}"):
            expr = expr[2:-1].strip()
        if expr.startswith("{") and expr.endswith("}"):
            items, _ = _split_args(expr, 0)
            keys = set()
            for item in items:
                m = re.match(r'\s*("[^"]*"|[A-Za-z_][\w-]*)\s*(=(?![=>])|:)', item)
                if not m:
                    return None
                keys.add(unquote(m.group(1)))
            return keys
        m = re.fullmatch(r"local\.([A-Za-z_][\w-]*)", expr)
        if m:
            value = mod.locals.get(m.group(1))
            if isinstance(value, dict):
                return {unquote(k) for k in value if not k.startswith("__")}
            if isinstance(value, str):
                return self.object_keys(mod, value)
            return None
        m = re.match(r"merge\s*\(", expr)
        if m and expr.endswith(")"):
            args, end = _split_args(expr, m.end() - 1)
            if end != len(expr) - 1:
                return None
            keys = set()
            for arg in args:
                part = self.object_keys(mod, arg)
                if part is None:
                    return None
                keys |= part
            return keys
        return None

    def check_template(self, path: str, where: str, passed: set) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            used, bound = set(), set()
            for inner in template_interpolations(text):
                directive = inner.strip().strip("~").strip()
                m = re.match(r"for\s+([\w-]+)(?:\s*,\s*([\w-]+))?\s+in\s", directive)
                if m:
                    bound.update(x for x in m.groups() if x)
                for frag in code_fragments(_strip_directive(inner)):
                    used |= expression_roots(frag)
        except ParseError as exc:
            self.problem(self.rel(path), str(exc))
            return
        used -= bound
        self.references += len(used)
        for name in sorted(used - passed):
            self.problem(self.rel(path), f"uses template variable {name!r} that {where} does not pass")
        for name in sorted(passed - used):
            self.problem(where, f"passes {name!r} to {self.rel(path)}, which never uses it")

    def check_unused_templates(self) -> None:
        for mod in self.modules.values():
            tdir = os.path.join(mod.path, "templates")
            if not os.path.isdir(tdir):
                continue
            for name in sorted(os.listdir(tdir)):
                path = os.path.normpath(os.path.join(tdir, name))
                self.files += 1
                if path not in self.used_templates:
                    self.problem(self.rel(path), "template is not used by any templatefile call")

    # ------------------------------------------------------------ guide --

    def check_guide(self, module_dir: str, guide: str) -> None:
        mod = self.modules.get(os.path.normpath(module_dir))
        where = self.rel(guide)
        if mod is None:
            self.problem(where, f"documents {self.rel(module_dir)}, which has no .tf files")
            return
        if not os.path.isfile(guide):
            self.problem(where, "guide does not exist")
            return
        self.files += 1
        with open(guide, encoding="utf-8") as fh:
            tables = markdown_tables(fh.read())
        var_rows = tables.get("variable")
        out_rows = tables.get("output")
        if var_rows is None:
            self.problem(where, "has no table whose first column is 'Variable'")
            var_rows = {}
        if out_rows is None:
            self.problem(where, "has no table whose first column is 'Output'")
            out_rows = {}
        for name, body in sorted(mod.variables.items()):
            self.references += 1
            row = var_rows.get(name)
            if row is None:
                self.problem(where, f"variable {name!r} of {mod.rel} is missing from the variables table")
                continue
            want_type = render_value(body.get("type", "any"))
            want_default = render_value(body["default"]) if "default" in body else "required"
            got_type = row.get("type", "")
            got_default = row.get("default", "")
            if got_type != want_type:
                self.problem(where, f"variable {name!r}: type is {want_type!r} in variables.tf, {got_type!r} in the guide")
            if got_default != want_default:
                self.problem(
                    where, f"variable {name!r}: default is {want_default!r} in variables.tf, {got_default!r} in the guide"
                )
        for name in sorted(set(var_rows) - set(mod.variables)):
            self.problem(where, f"variables table lists {name!r}, which {mod.rel} does not declare")
        for name in sorted(mod.outputs):
            self.references += 1
            if name not in out_rows:
                self.problem(where, f"output {name!r} of {mod.rel} is missing from the outputs table")
        for name in sorted(set(out_rows) - set(mod.outputs)):
            self.problem(where, f"outputs table lists {name!r}, which {mod.rel} does not declare")


def attribute_after(frag: str, i: int):
    """The attribute name after a traversal ending at i, skipping one index
    (`module.m[0].out`, `data.t.n`), or None. The index is not consumed, so
    references inside it are still found."""
    if i < len(frag) and frag[i] == "[":
        depth = 0
        j = i
        while j < len(frag):
            if frag[j] == "[":
                depth += 1
            elif frag[j] == "]":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    m = ATTR_RE.match(frag, i)
    return m.group(1) if m else None


def expression_roots(frag: str) -> set:
    """Root names an expression reads (template variables), without
    function names, object keys, keywords and for-expression variables."""
    bound = set()
    for m in FOR_RE.finditer(frag):
        bound.update(x for x in m.groups() if x)
    roots = set()
    for m in IDENT_RE.finditer(frag):
        name = m.group(1)
        tail = frag[m.end() :]
        if name in TEMPLATE_KEYWORDS or name in bound:
            continue
        if re.match(r"\s*\(", tail):
            continue  # function call
        if re.match(r"\s*=(?![=>])", tail):
            continue  # object key
        roots.add(name)
    return roots


def markdown_tables(text: str) -> dict:
    """Tables of a markdown text keyed by their first header cell (lower
    case): {name in backticks in the first cell: {header: cell}}."""
    tables: dict = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("|"):
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            block.append(lines[i])
            i += 1
        if len(block) < 2:
            continue
        header = [c.strip().lower() for c in split_row(block[0])]
        rows = {}
        for line in block[2:]:
            cells = split_row(line)
            name = cells[0].strip().strip("`")
            rows[name] = {h: clean_cell(c) for h, c in zip(header, cells)}
        if header:
            tables.setdefault(header[0], {}).update(rows)
    return tables


def split_row(line: str) -> list:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    # A pipe inside backticks (none expected) or escaped as \| stays in the cell.
    cells, buf, in_code = [], [], False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            buf.append("|")
            i += 2
            continue
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            cells.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    cells.append("".join(buf))
    return cells


def clean_cell(cell: str) -> str:
    cell = cell.strip()
    if len(cell) >= 2 and cell.startswith("`") and cell.endswith("`"):
        cell = cell[1:-1]
    return cell.strip()


def iter_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not k.startswith("__"):
                yield from iter_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_strings(v)


def main(argv: list) -> int:
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    if not os.path.isdir(root):
        sys.stderr.write(f"check_references.py: {root} is not a folder\n")
        return 2
    checker = Checker(root)
    checker.run()
    for p in checker.problems:
        print(p)
    print(f"terraform checks: {checker.files} files, {checker.references} references, {len(checker.problems)} problems")
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
