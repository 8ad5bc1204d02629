"""The rule a fee bump's new version must pass before it is stored (docs/architecture.md §5.2):
it spends every input of the version it replaces, so at most one of them can ever confirm; it
pays every payout the same output; and it pays nothing else but change to the hot wallet."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.models import Payout, Transaction, TransactionPayout
from shared.node import NodeClient
from shared.node.client import DecodedTx
from shared.sending.payment_check import PaymentMismatch, check_against_wallet
from shared.sending.signature_check import check_signatures_cover_everything


def check_replacement(
    session: Session, node: NodeClient, old_row_id: uuid.UUID, new: DecodedTx, raw_hex: str
) -> tuple[Transaction, dict[uuid.UUID, int]]:
    """The rule a new version must pass before it is stored: every input of the old version,
    every payout output unchanged (address and amount, once each), nothing else but change to
    the hot wallet, and no more change than before unless the wallet added inputs. Returns the
    old row and each payout's output in the new version."""
    old = session.get(Transaction, old_row_id)
    assert old is not None
    missing = sorted(set(old.inputs) - set(new.inputs))
    if missing:
        raise PaymentMismatch("replacement_drops_inputs",
                              f"the new version does not spend {', '.join(missing)}: it could "
                              "confirm alongside the old one")  # fmt: skip
    links = list(
        session.execute(
            select(Payout.id, Payout.destination, Payout.amount_sats)
            .join(TransactionPayout, TransactionPayout.payout_id == Payout.id)
            .where(TransactionPayout.tx_id == old.id)
            .order_by(TransactionPayout.vout)
        )
    )
    expected = {link.destination: link.amount_sats for link in links}
    check_signatures_cover_everything(raw_hex)
    by_destination = check_against_wallet(session, node, new.outputs, expected)
    if set(new.inputs) == set(old.inputs):
        old_outputs = node.decode_raw_transaction(old.raw_hex).outputs
        old_change = sum(o.value_sats for o in old_outputs if o.address not in expected)
        new_change = sum(o.value_sats for o in new.outputs if o.address not in expected)
        if new_change > old_change:
            raise PaymentMismatch(
                "replacement_grows_change",
                f"the new version's change ({new_change} sats) is more than the old one's "
                f"({old_change}): a bump only pays more fee",
            )
    return old, {link.id: by_destination[link.destination] for link in links}
