"""The one rule for what a transaction paying payouts may contain, for both senders.

A transaction passes only if it pays every payout it is for exactly once, exactly its amount,
and everything else it pays is change: at most one more output, to an address the hot wallet
owns and that no payout names. Anything looser lets money leave unseen: an extra output to a
stranger, or an extra output paying payout B's destination from payout A's transaction, which
pays B twice once B's own transaction confirms too (the worst defect found so far needed only a
signer key and that one extra output).

The worker checks the transaction the wallet funded before it persists it; the manual route
checks whatever a signer submits. Both call `check_against_wallet`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.errors import DomainError, ErrorKind
from shared.core.models import Payout
from shared.node import NodeClient
from shared.node.client import TxOutput
from shared.node.errors import NodeError, NodeUnavailable

# Bitcoin Core's wallet adds at most one change output; a second one has no honest use.
MAX_CHANGE_OUTPUTS = 1
# Past this many leftover outputs, refuse on the count alone instead of asking the node about
# each one (a crafted transaction could carry thousands).
MAX_OUTPUTS_EXPLAINED = 8


class PaymentMismatch(DomainError):
    """The transaction pays something other than the payouts it is for, plus change (or, from
    `signature_check`, is signed so that others could change it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, ErrorKind.INVALID)


OwnsAddress = Callable[[str], bool]
NamedDestinations = Callable[[Collection[str]], set[str]]


def check_pays_exactly(
    outputs: Sequence[TxOutput],
    expected: Mapping[str, int],
    *,
    wallet_owns: OwnsAddress,
    named_by_payouts: NamedDestinations,
) -> dict[str, int]:
    """Raise `PaymentMismatch` unless `outputs` are exactly the `expected` payments
    (destination -> sats) plus at most one change output; return destination -> vout.

    Each leftover output is explained first (no address, another payout's destination, not
    the hot wallet's), then their count; `named_by_payouts` (one DB query) and `wallet_owns`
    (one node call per output) are asked only about the leftovers.
    """
    vouts: dict[str, int] = {}
    for destination, amount in expected.items():
        paying = [o for o in outputs if o.address == destination]
        if len(paying) != 1 or paying[0].value_sats != amount:
            raise PaymentMismatch(
                "wrong_payment",
                f"the transaction must pay exactly {amount} sats to {destination} in one output",
            )
        vouts[destination] = paying[0].n
    rest = [o for o in outputs if o.address not in expected]
    if len(rest) > MAX_OUTPUTS_EXPLAINED:
        raise _too_many(rest)
    for out in rest:
        if out.address is None:
            raise PaymentMismatch(
                "unexpected_outputs",
                f"output {out.n} has no address (e.g. OP_RETURN or a non-standard script); "
                "only the payment and change to the hot wallet are allowed",
            )
    named = named_by_payouts([o.address for o in rest if o.address])
    for out in rest:
        if out.address in named:
            raise PaymentMismatch(
                "unexpected_outputs",
                f"output {out.n} pays {out.value_sats} sats to {out.address}, the destination "
                "of another payout: that payout must be paid by its own transaction only",
            )
        if out.address is not None and not wallet_owns(out.address):
            raise PaymentMismatch(
                "unexpected_outputs",
                f"output {out.n} pays {out.value_sats} sats to {out.address}, which is not an "
                "address of the hot wallet; only the payment and change are allowed",
            )
    if len(rest) > MAX_CHANGE_OUTPUTS:
        raise _too_many(rest)
    return vouts


def _too_many(rest: Sequence[TxOutput]) -> PaymentMismatch:
    return PaymentMismatch(
        "unexpected_outputs",
        f"the transaction has {len(rest)} outputs besides the payment; at most "
        f"{MAX_CHANGE_OUTPUTS} is allowed, as change to the hot wallet",
    )


def check_against_wallet(
    session: Session, node: NodeClient, outputs: Sequence[TxOutput], expected: Mapping[str, int]
) -> dict[str, int]:
    """`check_pays_exactly` with change judged by the hot wallet and the payouts table."""
    return check_pays_exactly(
        outputs,
        expected,
        wallet_owns=wallet_owns(node),
        named_by_payouts=destinations_named(session),
    )


def wallet_owns(node: NodeClient) -> OwnsAddress:
    """Ask the node whether the hot wallet holds the keys for an address (`ismine`).

    Watch-only addresses do not count: money sent there is not ours to spend. Any refusal by
    the node (an address it cannot parse, say) counts as "not ours": the check fails closed.
    An unreachable node raises `NodeUnavailable`, so the caller can say "retry" instead.
    """

    def owns(address: str) -> bool:
        try:
            info = node.get_address_info(address)
        except NodeUnavailable:
            raise
        except NodeError:
            return False
        return bool(info.get("ismine")) and not info.get("iswatchonly", False)

    return owns


def destinations_named(session: Session) -> NamedDestinations:
    """The addresses among those asked about that some payout, in any state, pays to."""

    def named(addresses: Collection[str]) -> set[str]:
        if not addresses:
            return set()
        rows = session.execute(
            select(Payout.destination).where(Payout.destination.in_(list(addresses))).distinct()
        )
        return set(rows.scalars())

    return named
