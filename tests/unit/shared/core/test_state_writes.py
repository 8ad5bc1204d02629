"""Nothing but the state machine writes `payouts.state` or `transactions.state`
(docs/architecture.md §4).

A static scan (`ast`) of the production source: shared/, api/, workers/ and cli/. Outside
shared/core/state_machine.py it refuses

- `update(Payout)` / `update(Transaction)` statements that set `state`, or whose columns it
  cannot see (`.values(**columns)`, `.values(some_dict)`), and `insert(...)` of either model
  with a `state`;
- legacy `query(...).update({"state": …})` / `.update({Model.state: …})`;
- assignments to an attribute called `state` (`payout.state = …`, `setattr(row, "state", …)`;
  a `setattr` with a computed name is not followed);
- constructing `Payout(...)` / `Transaction(...)` with `state=` (or with `**columns`);
- SQL text that updates either table's `state`.

Two constructions are allowed. `claims.persist_signed` (both senders' write-ahead) inserts the
new `Transaction` row with `state=TxState.SIGNED` inside one SAVEPOINT with the payouts' fenced
`claimed -> signed` CAS; `claims.persist_bump` (a fee bump's write-ahead) inserts the new
version the same way, in one SAVEPOINT with the old version's `broadcast -> replaced` CAS and
the payouts' move. Neither is a transition: an INSERT cannot overwrite a state anyone else
wrote (the unique txid makes a repeated insert fail), and each SAVEPOINT is rolled back when a
CAS moves fewer rows than asked, so a `signed` row exists only where every CAS won. Every later
change of that row is a `transition_tx` CAS. New payouts are
inserted by `state_machine.create_payout` itself.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SCANNED = ("shared", "api", "workers", "cli")
STATE_MACHINE = "shared/core/state_machine.py"
MODELS = {"Payout", "Transaction"}
MODELS_MODULE = "shared.core.models"
# (file, enclosing function, model): the one construction with a state outside the machine.
ALLOWED_CONSTRUCTIONS = {
    ("shared/core/claims.py", "persist_signed", "Transaction"),
    ("shared/core/claims.py", "persist_bump", "Transaction"),
}
SQL_STATE_WRITE = re.compile(
    r"\b(update\s+(payouts|transactions)\b.*\bset\b.*\bstate\b"
    r"|insert\s+into\s+(payouts|transactions)\b.*\bstate\b)",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Write:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.writes: list[Write] = []
        self.allowed_used: set[tuple[str, str, str]] = set()
        self.model_names: dict[str, str] = {}  # local name -> model
        self.models_modules: set[str] = set()  # local names bound to shared.core.models
        self.functions: list[str] = []

    # -- names --------------------------------------------------------------------------------
    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == MODELS_MODULE:
            for alias in node.names:
                if alias.name in MODELS:
                    self.model_names[alias.asname or alias.name] = alias.name
        elif node.module == "shared.core":
            for alias in node.names:
                if alias.name == "models":
                    self.models_modules.add(alias.asname or alias.name)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == MODELS_MODULE and alias.asname:
                self.models_modules.add(alias.asname)
        self.generic_visit(node)

    def _model(self, node: ast.AST) -> str | None:
        """The model a name or `models.X` expression refers to, if any."""
        if isinstance(node, ast.Name):
            return self.model_names.get(node.id)
        if (
            isinstance(node, ast.Attribute)
            and node.attr in MODELS
            and isinstance(node.value, ast.Name)
            and node.value.id in self.models_modules
        ):
            return node.attr
        return None

    def _flag(self, node: ast.AST, what: str) -> None:
        self.writes.append(Write(self.path, getattr(node, "lineno", 0), what))

    # -- functions (for the allow-list) -------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    # -- assignments --------------------------------------------------------------------------
    def _check_targets(self, targets: list[ast.expr]) -> None:
        for target in targets:
            for node in ast.walk(target):
                if not isinstance(node, ast.Attribute):
                    continue
                if isinstance(node.ctx, ast.Store) and node.attr == "state":
                    self._flag(node, f"assigns `{ast.unparse(node)}`")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._check_targets(node.targets)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_targets([node.target])
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_targets([node.target])
        self.generic_visit(node)

    # -- SQL text -----------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and SQL_STATE_WRITE.search(node.value):
            self._flag(node, "SQL text writes a state column")

    # -- calls --------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        self._check_construction(node)
        self._check_setattr(node)
        self._check_values(node)
        self._check_query_update(node)
        self.generic_visit(node)

    def _check_construction(self, node: ast.Call) -> None:
        model = self._model(node.func)
        if model is None:
            return
        for keyword in node.keywords:
            if keyword.arg == "state" or keyword.arg is None:
                spot = (self.path, self.functions[-1] if self.functions else "", model)
                if spot in ALLOWED_CONSTRUCTIONS and _is_tx_signed(keyword.value):
                    self.allowed_used.add(spot)
                    continue
                shown = "state=…" if keyword.arg else "**columns"
                self._flag(node, f"constructs {model}({shown})")

    def _check_setattr(self, node: ast.Call) -> None:
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "state"
        ):
            self._flag(node, f"`{ast.unparse(node)}` may set a state")

    def _check_values(self, node: ast.Call) -> None:
        """`.values(...)` on a statement built from update(Model) / insert(Model)."""
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "values"):
            return
        model = self._statement_model(node.func.value)
        if model is None:
            return
        for keyword in node.keywords:
            if keyword.arg == "state":
                self._flag(node, f"`{model}` statement sets state=…")
            elif keyword.arg is None:
                self._flag(node, f"`{model}` statement sets columns it does not name (**…)")
        for arg in node.args:
            if not isinstance(arg, ast.Dict) or any(_is_state_key(k) for k in arg.keys):
                self._flag(node, f"`{model}` statement sets state (or unnamed columns)")

    def _statement_model(self, node: ast.AST) -> str | None:
        """Walk a method chain (`update(M).where(...).values`) down to update(M)/insert(M)."""
        while True:
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in ("update", "insert") and node.args:
                    model = self._model(node.args[0])
                    if model is not None:
                        return model
                node = func
            elif isinstance(node, ast.Attribute):
                node = node.value
            else:
                return None

    def _check_query_update(self, node: ast.Call) -> None:
        """Legacy ORM: `session.query(M).filter(...).update({"state": …})`."""
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "update"):
            return
        for arg in node.args:
            if isinstance(arg, ast.Dict) and any(_is_state_key(k) for k in arg.keys):
                self._flag(node, "query update sets state")


def _is_state_key(key: ast.expr | None) -> bool:
    if key is None:  # {**other}
        return True
    if isinstance(key, ast.Constant):
        return key.value == "state"
    return isinstance(key, ast.Attribute) and key.attr == "state"


def _is_tx_signed(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and ast.unparse(node) == "TxState.SIGNED"


def scan_source(path: str, source: str) -> tuple[list[Write], set[tuple[str, str, str]]]:
    if path == STATE_MACHINE:
        return [], set()
    scanner = _Scanner(path)
    scanner.visit(ast.parse(source, filename=path))
    return scanner.writes, scanner.allowed_used


def production_files() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))


def test_only_the_state_machine_writes_a_state() -> None:
    writes: list[Write] = []
    allowed_used: set[tuple[str, str, str]] = set()
    files = production_files()
    assert len(files) > 50, f"scan found too few files under {ROOT}"
    for path in files:
        found, used = scan_source(path.relative_to(ROOT).as_posix(), path.read_text())
        writes += found
        allowed_used |= used
    assert writes == [], "state written outside shared/core/state_machine.py:\n" + "\n".join(
        map(str, writes)
    )
    # The exemption must still describe real code, or it is a hole waiting to be reused.
    assert allowed_used == ALLOWED_CONSTRUCTIONS


# -- the scanner itself: each way of writing a state is caught -----------------------------------

HEADER = (
    "from sqlalchemy import update, insert, text\n"
    "from shared.core.models import Payout, Transaction as Tx, TxState\n"
    "from shared.core import models\n"
)
CAUGHT = {
    "update_values": "def f(s):\n    s.execute(update(Payout).where(x).values(state='signed'))\n",
    "update_transaction": (
        "def f(s, t):\n"
        "    s.execute(update(Tx).where(Tx.id == t.id).values(state=TxState.BROADCAST))\n"
    ),
    "update_unnamed_columns": "def f(s, v):\n    s.execute(update(Payout).values(**v))\n",
    "update_dict": "def f(s):\n    s.execute(update(models.Transaction).values({'state': 'x'}))\n",
    "insert": "def f(s):\n    s.execute(insert(Payout).values(state='approved'))\n",
    "assign": "def f(p):\n    p.state = 'broadcast'\n",
    "assign_nested": "def f(s):\n    s.get(Payout, 1).state = 'failed'\n",
    "setattr": "def f(p):\n    setattr(p, 'state', 'failed')\n",
    "construct_payout": "def f():\n    return Payout(id=1, state='approved')\n",
    "construct_unnamed": "def f(kw):\n    return models.Payout(**kw)\n",
    "construct_tx_elsewhere": "def f():\n    return Tx(txid='a', state=TxState.SIGNED)\n",
    "query_update": "def f(s):\n    s.query(Payout).update({Payout.state: 'failed'})\n",
    "sql_text": "def f(s):\n    s.execute(text('UPDATE transactions SET state = :s'))\n",
}
NOT_WRITES = {
    "other_columns": "def f(s):\n    s.execute(update(Payout).values(reserved_inputs=[]))\n",
    "read": "def f(p):\n    return p.state == 'signed'\n",
    "request_state": "def f(request):\n    request.state.principal = 1\n",
    "other_class": "def f(o):\n    return Other(state=1)\n",
    "allowed_insert": (
        "def persist_signed(s):\n    s.add(Tx(txid='a', state=TxState.SIGNED))\n"
    ),
}


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_the_scan_catches(name: str) -> None:
    path = "shared/core/claims.py" if name == "construct_tx_elsewhere" else "shared/x.py"
    writes, _ = scan_source(path, HEADER + CAUGHT[name])
    assert len(writes) == 1, writes


@pytest.mark.parametrize("name", sorted(NOT_WRITES))
def test_the_scan_lets_pass(name: str) -> None:
    writes, _ = scan_source("shared/core/claims.py", HEADER + NOT_WRITES[name])
    assert writes == []


def test_the_allowed_insert_must_insert_signed() -> None:
    source = HEADER + "def persist_signed(s):\n    s.add(Tx(state=TxState.BROADCAST))\n"
    writes, _ = scan_source("shared/core/claims.py", source)
    assert len(writes) == 1
