"""Dead proofs for payout transactions chained on another payout's unconfirmed change.

An input missing from the chain's UTXO set is proof of a confirmed foreign spend only when the
coin was in the chain to begin with. Change of an unconfirmed parent is missing simply because
the parent is not confirmed yet (or was dropped from the mempool and will be resent).
"""

from __future__ import annotations

from cli.addresses import external_address
from shared.node import NodeClient
from shared.sending.broadcasting import prove_dead


def _send(node: NodeClient, amount_sats: int) -> tuple[str, str, list[str]]:
    raw = node.create_raw_transaction({external_address(): amount_sats})
    funded = node.fund_raw_transaction(raw, fee_rate_sat_vb=2)
    signed = node.sign_raw_transaction_with_wallet(funded.hex)
    return node.send_raw_transaction(signed), signed, node.decode_raw_transaction(signed).inputs


def test_a_child_of_an_evicted_parent_is_not_dead(node: NodeClient) -> None:
    parent, parent_hex, _ = _send(node, 10_000)
    child, _, child_inputs = _send(node, 20_000)  # spends the parent's change
    assert {i.split(":")[0] for i in child_inputs} == {parent}
    node.call("devnode_evict", parent)  # takes the child with it
    assert prove_dead(node, child, child_inputs) is None
    node.send_raw_transaction(parent_hex)  # what the tracker does with a dropped parent
    assert prove_dead(node, child, child_inputs) is None


def test_a_child_of_a_double_spent_parent_is_dead_once_the_spend_confirms(
    node: NodeClient,
) -> None:
    parent, _, _ = _send(node, 10_000)
    child, _, child_inputs = _send(node, 20_000)
    foreign = node.call("devnode_double_spend", parent)["txid"]
    assert prove_dead(node, child, child_inputs) is None  # the foreign spend may still lose
    node.generate_to_address(1, node.get_new_address())
    proof = prove_dead(node, child, child_inputs)
    assert proof is not None
    reason = proof.reason(child)
    assert parent in reason and foreign in reason
