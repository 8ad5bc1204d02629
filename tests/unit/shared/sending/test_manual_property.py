"""Property: `manual/submit` accepts a transaction only if it pays exactly that payout plus
change, on the payout's reserved inputs only — whatever a signer crafts.

Hypothesis generates the transaction's shape (which coins it spends, how it pays the payout,
what else it pays, PSBT or raw hex, whether the claim exists or has its inputs reserved); the
simulated node builds and signs the real transaction with the hot wallet, and the test checks
the route's verdict against the rule and, for a refusal, that nothing was stored or sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from embit.psbt import PSBT
from embit.transaction import Transaction as EmbitTx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cli.addresses import external_address
from shared.core.errors import DomainError, ErrorKind
from shared.core.models import Payout, PayoutState, Route, Transaction
from shared.node import NodeClient
from tests.unit.shared.factories import make_payout
from tests.unit.shared.sending import test_manual as world
from tests.unit.shared.sending.test_manual import (
    FEE,
    claim,
    manual_payout,
    other_coin,
    submit,
    value_of,
)

# The same simulated node (ten mature coins) and SQLite database as the example-based tests
# (the devnode itself comes from this folder's conftest).
node, session = world.node, world.session

S = PayoutState

INPUTS = ["reserved", "reserved+other", "other", "reserved, but the claim lost its reservation",
          "no claim at all"]  # fmt: skip
PAYMENTS = ["exact", "one sat short", "one sat over", "split in two", "missing"]
EXTRAS = ["stranger", "another payout's destination", "no address (OP_RETURN)"]


@dataclass(frozen=True)
class Shape:
    inputs: str
    payment: str
    extras: tuple[str, ...]
    change_outputs: int
    as_psbt: bool

    def acceptable(self) -> bool:
        return (
            self.inputs == "reserved"
            and self.payment == "exact"
            and not self.extras
            and self.change_outputs <= 1
        )


shapes = st.builds(
    Shape,
    inputs=st.sampled_from(INPUTS),
    payment=st.sampled_from(PAYMENTS),
    extras=st.lists(st.sampled_from(EXTRAS), max_size=2).map(tuple),
    change_outputs=st.integers(0, 2),
    as_psbt=st.booleans(),
)
EXTRA_SATS = 300_000


def _build(session: Session, node: NodeClient, shape: Shape, payout: Payout,
           inputs: list[str], other_destination: str) -> str:  # fmt: skip
    """The signed transaction of `shape` (PSBT or raw hex)."""
    extras: list[tuple[bytes | str, int]] = []
    for extra in shape.extras:
        if extra == "stranger":
            extras.append((external_address(), EXTRA_SATS))
        elif extra == "another payout's destination":
            extras.append((other_destination, EXTRA_SATS))
        else:
            extras.append((bytes.fromhex("6a04deadbeef"), 0))
    spent = sum(value_of(node, i) for i in inputs)
    amount = payout.amount_sats
    if shape.change_outputs == 0:
        # Without change the payment must take whatever the inputs hold, less the fee.
        amount = spent - sum(v for _, v in extras) - FEE
        session.execute(update(Payout).where(Payout.id == payout.id).values(amount_sats=amount))
        session.commit()
    pay = {"exact": [amount], "one sat short": [amount - 1], "one sat over": [amount + 1],
           "split in two": [amount // 2, amount - amount // 2], "missing": []}[shape.payment]
    outs: list[tuple[bytes | str, int]] = [(payout.destination, v) for v in pay] + extras
    leftover = spent - sum(v for _, v in outs) - FEE
    for _ in range(shape.change_outputs):
        outs.append((node.get_new_address(), leftover // shape.change_outputs))
    return _sign(node, inputs, outs, as_psbt=shape.as_psbt)


def _sign(node: NodeClient, inputs: list[str], outs: list[tuple[bytes | str, int]], *,
          as_psbt: bool) -> str:  # fmt: skip
    # createrawtransaction refuses duplicated addresses and scripts without one, so build
    # with stand-in addresses and put the real scripts into the bytes before signing.
    stand_ins = {external_address(): target for target, _ in outs}
    raw = node.create_raw_transaction(
        {address: sats for address, (_, sats) in zip(stand_ins, outs, strict=True)}, inputs
    )
    tx = EmbitTx.from_string(raw)
    for vout, (target, _) in zip(tx.vout, outs, strict=True):
        if isinstance(target, bytes):
            vout.script_pubkey.data = target
        else:
            vout.script_pubkey.data = bytes.fromhex(node.get_address_info(target)["scriptPubKey"])
    signed, _ = node.wallet_process_psbt(PSBT(tx).to_base64())
    return signed if as_psbt else (node.finalize_psbt(signed)[0] or "")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=shapes)
def test_submit_accepts_only_the_payment_plus_change_on_reserved_inputs(
    session: Session, node: NodeClient, shape: Shape
) -> None:
    node.generate_to_address(1, node.get_new_address())  # an empty mempool to judge by
    other = make_payout(session, state=S.CONFIRMED, route=Route.AUTOMATIC,
                        destination=external_address(), amount_sats=EXTRA_SATS)  # fmt: skip
    payout = manual_payout(session)
    reserved: list[str] = []
    if shape.inputs != "no claim at all":
        reserved = claim(session, node, payout).inputs
    if shape.inputs == "reserved, but the claim lost its reservation":
        session.execute(update(Payout).where(Payout.id == payout.id).values(reserved_inputs=None))
        session.commit()
    inputs = {"reserved+other": [*reserved, other_coin(node, reserved)],
              "other": [other_coin(node, reserved)],
              "no claim at all": [other_coin(node, reserved)]}.get(shape.inputs, reserved)
    signed = _build(session, node, shape, payout, inputs, other.destination)
    body = {"psbt": signed} if shape.as_psbt else {"tx_hex": signed}
    stored_before = session.scalar(select(func.count()).select_from(Transaction))

    try:
        done = submit(session, node, payout, **body)
    except DomainError as refusal:
        assert not shape.acceptable(), (shape, refusal.code, refusal.message)
        assert refusal.kind in (ErrorKind.CONFLICT, ErrorKind.INVALID), refusal.message
        session.expire_all()
        assert session.scalar(select(func.count()).select_from(Transaction)) == stored_before
        assert session.get(Payout, payout.id).state in (S.APPROVED, S.CLAIMED)  # type: ignore[union-attr]
        assert node.call("getrawmempool") == []
        node.unlock_unspent(reserved)  # give the coins back for the next examples
        return
    assert shape.acceptable(), shape
    assert done.state == "broadcast"
    assert node.call("getrawmempool") == [done.txid]
