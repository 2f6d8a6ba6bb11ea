"""Canonical TorchScript and lite-interpreter archives: the same model gives the same bytes.

``torch.jit.save`` and ``_save_for_lite_interpreter`` write some bytes that depend on the
process or the machine rather than on the model:

- **Mangled class names.** Scripting and freezing give each re-specialised class a name
  such as ``__torch__.torchvision.models.segmentation.deeplabv3.___torch_mangle_55.DeepLabV3``
  from one process-wide counter, so the name (and the file ``code/.../___torch_mangle_55.py``)
  depends on everything the process scripted before: exporting the same model twice in one
  process, or after another model, gives other bytes. They are renumbered here from 0 in the
  order they first appear (record order, then position), in code, file names and pickles.
- **Debug records** (``code/**/*.debug_pkl``). They map the printed code back to the original
  Python source, and hold the absolute paths of the installed source files and those files'
  text: the bytes depend on where packages are installed, and a shipped artifact would carry
  the exporting machine's paths and the plugin's source. They are left out; loaders do not need
  them (error tracebacks then point into the archive's own ``code/`` files).
- **Hoisted constants.** The code printer writes long constants (error messages, lists) at the
  top of each function as ``_0 = ...``, in the order the body uses them. It has been seen to
  write two of them the other way round in one process of a pair (models that call
  ``F.interpolate``). The hoisted block is put back in first-use order, with the names
  permuted to match, so either printing gives the same text; when the printer followed its
  rule, the text is unchanged.
- **Backported constants** (``constants/94828856384912.storage``) are named by memory address
  by ``torch.jit.mobile._backport_for_mobile``; they are renumbered in record order.

Tensor bytes, the bytecode's instructions and every other record are copied unchanged, in
the order torch wrote them. ``.data/serialization_id`` is dropped: the writer derives a new
one from the content.
"""

from __future__ import annotations

import ast
import io
import pickletools
import re
import struct
import tokenize
from collections.abc import Callable
from pathlib import Path

from zoo.errors import ExportError

_MANGLE = re.compile(r"___torch_mangle_(\d+)")
_BACKPORT_CONSTANT = re.compile(r"^constants/(\d+\.storage)$")
_HOISTED = re.compile(r"^_\d+$")
#: Opcodes carrying a string, and the bytes from the opcode to the string's first byte.
_STRING_OPS = {"BINUNICODE": 5, "SHORT_BINUNICODE": 2, "BINUNICODE8": 9}
#: Opcodes that would make byte-level rewriting unsafe (frames hold byte counts).
_UNSAFE_OPS = {"FRAME", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def canonicalize(source: Path | bytes, dest: Path | io.BytesIO) -> int | None:
    """Write the archive ``source`` (a file or its bytes) canonically to ``dest``; return the
    bytecode version of the ``bytecode.pkl`` written (lite archives), else None.

    ``dest`` is a path (the archive's inner folder is the file's stem) or, as zoo's exporters
    use it, a buffer (inner folder ``archive``): torch's C++ file writer aborts the process
    when the disk fills, so the exporters write the finished bytes from Python."""
    return write_archive(canonical_records(source), dest)


def canonical_records(source: Path | bytes) -> list[tuple[str, bytes]]:
    """The records of the archive ``source`` made canonical, in torch's order: the work of
    :func:`canonicalize` before anything is written (exporters do it while the golden inputs
    still run, then :func:`write_archive` adds the embedded files)."""
    import torch

    reader = torch._C.PyTorchFileReader(io.BytesIO(source) if isinstance(source, bytes)
                                        else str(source))
    names = [n for n in reader.get_all_records()
             if n != ".data/serialization_id" and not n.endswith(".debug_pkl")]
    records = {n: reader.get_record(n) for n in names}
    mangles = _mangle_renames(names, records)
    constants: dict[str, str] = {}
    for name in names:
        match = _BACKPORT_CONSTANT.match(name)
        if match:
            constants[match.group(1)] = f"{len(constants)}.storage"

    def rename(text: str) -> str:
        text = constants.get(text, text)
        return _MANGLE.sub(lambda m: f"___torch_mangle_{mangles[m.group(1)]}", text)

    out = []
    for name in names:
        data = records.pop(name)
        if name.endswith(".pkl"):
            data = rewrite_pickle_strings(data, rename, name)
        elif name.startswith("code/") and name.endswith(".py"):
            data = canonical_code(rename(data.decode("utf-8"))).encode("utf-8")
        match = _BACKPORT_CONSTANT.match(name)
        out.append((f"constants/{constants[match.group(1)]}" if match else rename(name), data))
    return out


def write_archive(records: list[tuple[str, bytes]], dest: Path | io.BytesIO,
                  extra_files: dict[str, str] | None = None) -> int | None:
    """Write ``records`` (from :func:`canonical_records`) as an archive, with ``extra_files``
    (name -> text) first as ``extra/NAME``, where torch's own writer puts them; return the
    bytecode version of its ``bytecode.pkl`` (None without one)."""
    import torch

    extras = [(f"extra/{name}", text.encode("utf-8"))
              for name, text in sorted((extra_files or {}).items())]
    if extras and any(name.startswith("extra/") for name, _ in records):
        raise ExportError("the archive already holds extra files; save it without them")
    writer = torch._C.PyTorchFileWriter(dest if isinstance(dest, io.BytesIO) else str(dest))
    version = None
    for name, data in [*extras, *records]:
        if name == "bytecode.pkl":
            version = pickled_bytecode_version(data)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return version


#: Opcodes that push an int: the bytecode version is the first one of ``bytecode.pkl``.
_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1"}


def pickled_bytecode_version(data: bytes) -> int | None:
    """The version a lite archive's ``bytecode.pkl`` starts with (the tuple's first item, as
    ``torch.jit.mobile._get_model_bytecode_version`` reads it, without parsing the whole
    archive), or None when the pickle does not start that way."""
    for op, arg, _pos in pickletools.genops(data):
        if op.name in ("PROTO", "MARK"):
            continue
        return arg if op.name in _INT_OPS and isinstance(arg, int) else None
    return None


def _mangle_renames(names: list[str], records: dict[str, bytes]) -> dict[str, str]:
    """Mangle numbers in first-appearance order (record names, code and pickles) -> 0, 1, ..."""
    order: dict[str, str] = {}

    def see(text: str) -> None:
        for match in _MANGLE.finditer(text):
            order.setdefault(match.group(1), str(len(order)))

    for name in names:
        see(name)
        if name.endswith(".pkl") or (name.startswith("code/") and name.endswith(".py")):
            see(records[name].decode("latin-1"))
    return order


def rewrite_pickle_strings(data: bytes, rename: Callable[[str], str], where: str) -> bytes:
    """Pass every pickled string and ``GLOBAL`` name through ``rename``; other bytes are
    copied. Pickles of protocol <= 3 hold no byte offsets, so lengths may change."""
    out = bytearray()
    last = 0
    for op, arg, pos in pickletools.genops(data):
        if op.name in _UNSAFE_OPS:
            raise ExportError(f"cannot make {where} canonical: unexpected pickle opcode {op.name}")
        if op.name in _STRING_OPS and isinstance(arg, str):
            new = rename(arg)
            if new != arg:
                raw = new.encode("utf-8")
                out += data[last:pos] + b"X" + struct.pack("<I", len(raw)) + raw
                last = pos + _STRING_OPS[op.name] + len(arg.encode("utf-8"))
        elif op.name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            new_module, new_attr = rename(module), rename(attr)
            if (new_module, new_attr) != (module, attr):
                out += data[last:pos] + b"c" + f"{new_module}\n{new_attr}\n".encode()
                last = pos + 1 + len(f"{module}\n{attr}\n".encode())
    return bytes(out + data[last:])


def canonical_code(code: str) -> str:
    """``code`` with each function's hoisted constants (``_N = literal`` lines at the top of
    its body) in the order the body first uses them, names permuted to match. Code that does
    not parse, or whose hoisted blocks are already in order, comes back unchanged."""
    try:
        tree = ast.parse(code)
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (SyntaxError, tokenize.TokenError):
        return code
    lines = code.splitlines(keepends=True)
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        plan = _hoist_plan(function)
        if plan is None:
            continue
        hoisted, renames = plan
        first, last = function.lineno, function.end_lineno or function.lineno
        edits = [
            (token.start, token.end[1], renames[token.string])
            for previous, token in zip([None, *tokens], tokens, strict=False)
            if token.type == tokenize.NAME and token.string in renames
            and first <= token.start[0] <= last
            and not (previous is not None and previous.string == ".")
        ]
        for (row, col), end_col, new in reversed(edits):  # right to left: columns stay valid
            lines[row - 1] = lines[row - 1][:col] + new + lines[row - 1][end_col:]
        top = hoisted[0].lineno - 1
        lines[top:top + len(hoisted)] = sorted(
            lines[top:top + len(hoisted)], key=lambda line: int(line.split("=", 1)[0].strip()[1:])
        )
    return "".join(lines)


def _hoist_plan(function: ast.FunctionDef) -> tuple[list[ast.Assign], dict[str, str]] | None:
    """The hoisted statements and the renames that put them in first-use order, or None."""
    hoisted: list[ast.Assign] = []
    for statement in function.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and _HOISTED.match(statement.targets[0].id)
                and statement.lineno == statement.end_lineno
                and statement.lineno == function.body[0].lineno + len(hoisted)
                and _is_literal(statement.value)):
            break
        hoisted.append(statement)
    names = [s.targets[0].id for s in hoisted]  # type: ignore[attr-defined]
    if len(names) < 2 or len(set(names)) != len(names):
        return None
    uses = sorted(
        (node.lineno, node.col_offset, node.id)
        for statement in function.body[len(hoisted):]
        for node in ast.walk(statement)
        if isinstance(node, ast.Name) and node.id in names
    )
    first_use: list[str] = []
    for _, _, name in uses:
        if name not in first_use:
            first_use.append(name)
    first_use += [n for n in names if n not in first_use]  # unused ones keep their place
    if first_use == names:
        return None
    return hoisted, {old: new for old, new in zip(first_use, names, strict=True)}


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True
