"""The manual route's rules, one refusal at a time: SQLite and the simulated node in-process.

Each test plays a signer holding a `payouts:sign` key who tries to get a transaction accepted
that pays more than the claimed payout, or spends other coins, or races the claim. The ledger
judgement across processes lives in tests/integration/pipeline/test_manual_route.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from embit.transaction import Transaction as EmbitTx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.core.errors import DomainError, ErrorKind
from shared.core.models import Payout, PayoutState, Route, Transaction
from shared.infra.db import get_engine
from shared.infra.settings import get_settings
from shared.infra.unit_of_work import UnitOfWork
from shared.node import NodeClient
from shared.node.amounts import btc_to_sats
from shared.sending import manual
from tests.unit.shared.factories import make_payout, use_app_database

S = PayoutState
AMOUNT = 2_000_000
FEE = 3_000  # ~10-20 sat/vB for these one- and two-input transactions


@pytest.fixture
def node(devnode: RunningDevnode) -> RegtestNode:
    client = RegtestNode(devnode.wallet_url, timeout=5, read_retries=0)
    client.generate_to_address(110, client.get_new_address())  # ten mature 50 BTC coins
    return client


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    use_app_database(monkeypatch, tmp_path / "p.db", PAYOUTS_MAX_FEE_RATE_SAT_VB="50")
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def manual_payout(session: Session, amount: int = AMOUNT) -> Payout:
    return make_payout(
        session, state=S.APPROVED, route=Route.MANUAL, amount_sats=amount,
        destination=external_address(),
    )  # fmt: skip


def claim(session: Session, node: NodeClient, payout: Payout, key: str = "signer"
          ) -> manual.ManualClaim:  # fmt: skip
    return manual.claim(UnitOfWork(session), node, get_settings(), payout.id, key)


def claimed(session: Session, node: NodeClient) -> tuple[Payout, manual.ManualClaim]:
    """A new manual payout of AMOUNT, claimed by "signer": where most tests start."""
    payout = manual_payout(session)
    return payout, claim(session, node, payout)


def submit(session: Session, node: NodeClient, payout: Payout, key: str = "signer",
           **body: str) -> manual.Submitted:  # fmt: skip
    return manual.submit(UnitOfWork(session), node, get_settings(), payout.id, key, **body)


def value_of(node: NodeClient, outpoint: str) -> int:
    out = node.get_tx_out(outpoint)
    assert out is not None, outpoint
    return btc_to_sats(out["value"])


def spend(node: NodeClient, inputs: list[str], outputs: dict[str, int],
          change: int | None = None) -> str:  # fmt: skip
    """A wallet-signed transaction on exactly `inputs`; the rest minus FEE goes to one fresh
    wallet address when `change` is None (pass 0 for no change output)."""
    total = sum(value_of(node, i) for i in inputs)
    outs = dict(outputs)
    rest = total - sum(outs.values()) - FEE if change is None else change
    if rest:
        outs[node.get_new_address()] = rest
    return node.sign_raw_transaction_with_wallet(node.create_raw_transaction(outs, inputs))


def other_coin(node: NodeClient, not_these: list[str]) -> str:
    for coin in node.list_unspent(1):
        outpoint = f"{coin['txid']}:{coin['vout']}"
        if outpoint not in not_these:
            return outpoint
    raise AssertionError("no spare coin")


def refused(session: Session, node: NodeClient, payout: Payout, code: str, **body: str) -> str:
    """Submit, expect the refusal `code`, and check that nothing was stored or sent."""
    with pytest.raises(DomainError) as caught:
        submit(session, node, payout, **body)
    assert caught.value.code == code, caught.value.message
    session.expire_all()
    assert session.get(Payout, payout.id).state == S.CLAIMED  # type: ignore[union-attr]
    assert session.scalars(select(Transaction)).all() == []
    assert node.call("getrawmempool") == []
    return caught.value.message


class TestExtraOutputs:
    def test_an_output_paying_another_payouts_destination_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        other = make_payout(session, state=S.BROADCAST, route=Route.AUTOMATIC,
                            destination=external_address(), amount_sats=500_000)  # fmt: skip
        payout, held = claimed(session, node)
        raw = spend(node, held.inputs, {payout.destination: AMOUNT, other.destination: 500_000})
        message = refused(session, node, payout, "unexpected_outputs", tx_hex=raw)
        assert other.destination in message and "another payout" in message

    @pytest.mark.parametrize("stranger_sats", [1_000_000, 500_000])
    def test_an_output_to_an_address_no_payout_names_is_refused(
        self, session: Session, node: NodeClient, stranger_sats: int
    ) -> None:
        payout, held = claimed(session, node)
        stranger = external_address()
        raw = spend(node, held.inputs, {payout.destination: AMOUNT, stranger: stranger_sats})
        message = refused(session, node, payout, "unexpected_outputs", tx_hex=raw)
        assert stranger in message and "not an address of the hot wallet" in message

    def test_the_same_rule_holds_for_a_signed_psbt(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        funded = node.wallet_create_funded_psbt(
            {payout.destination: AMOUNT, external_address(): 1_000_000},
            fee_rate_sat_vb=2, inputs=held.inputs, add_inputs=False, lock_unspents=False,
        )  # fmt: skip
        signed, complete = node.wallet_process_psbt(funded.psbt)
        assert complete
        refused(session, node, payout, "unexpected_outputs", psbt=signed)

    def test_two_change_outputs_are_refused(self, session: Session, node: NodeClient) -> None:
        payout, held = claimed(session, node)
        raw = spend(node, held.inputs, {payout.destination: AMOUNT, node.get_new_address(): 1000})
        message = refused(session, node, payout, "unexpected_outputs", tx_hex=raw)
        assert "at most 1" in message

    def test_a_split_payment_is_refused(self, session: Session, node: NodeClient) -> None:
        payout, held = claimed(session, node)
        # Two outputs to the destination adding up to the amount. createrawtransaction refuses
        # a duplicated address, so build it with a stand-in and swap the script in the bytes.
        stand_in = external_address()
        total = sum(value_of(node, i) for i in held.inputs)
        half = AMOUNT // 2
        unsigned = node.create_raw_transaction(
            {payout.destination: half, stand_in: AMOUNT - half,
             node.get_new_address(): total - AMOUNT - FEE},
            held.inputs,
        )  # fmt: skip
        script = node.get_address_info(stand_in)["scriptPubKey"]
        paying = node.get_address_info(payout.destination)["scriptPubKey"]
        raw = node.sign_raw_transaction_with_wallet(unsigned.replace(script, paying))
        outputs = node.decode_raw_transaction(raw).outputs
        assert [o.address for o in outputs].count(payout.destination) == 2
        refused(session, node, payout, "wrong_payment", tx_hex=raw)


class TestReservedInputs:
    def test_a_transaction_on_other_wallet_coins_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        raw = spend(node, [other_coin(node, held.inputs)], {payout.destination: AMOUNT})
        message = refused(session, node, payout, "must_spend_reserved_inputs", tx_hex=raw)
        assert held.inputs[0] in message

    def test_a_transaction_adding_an_unreserved_input_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        extra = other_coin(node, held.inputs)
        raw = spend(node, [*held.inputs, extra], {payout.destination: AMOUNT})
        message = refused(session, node, payout, "unreserved_inputs", tx_hex=raw)
        assert extra in message

    def test_a_claim_without_reserved_inputs_accepts_nothing(
        self, session: Session, node: NodeClient
    ) -> None:
        # Only a row written before claims and reservations committed together can look so.
        payout, held = claimed(session, node)
        session.execute(update(Payout).where(Payout.id == payout.id).values(reserved_inputs=None))
        session.commit()
        raw = spend(node, [other_coin(node, held.inputs)], {payout.destination: AMOUNT})
        refused(session, node, payout, "must_spend_reserved_inputs", tx_hex=raw)

    def test_a_takeover_whose_reserved_inputs_are_spent_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        manual.release(UnitOfWork(session), payout.id, "signer")
        # The released PSBT's coin gets spent elsewhere (say the signer broadcast a copy).
        node.unlock_unspent(held.inputs)
        node.send_raw_transaction(spend(node, held.inputs, {}, change=None))
        with pytest.raises(DomainError) as caught:
            claim(session, node, payout, key="signer2")
        assert caught.value.code == "reserved_inputs_unavailable"
        assert "check the chain" in caught.value.message
        session.expire_all()
        assert session.get(Payout, payout.id).state == S.APPROVED  # type: ignore[union-attr]


class TestSignerMistakes:
    def test_an_unsigned_psbt_is_incomplete(self, session: Session, node: NodeClient) -> None:
        payout, held = claimed(session, node)
        refused(session, node, payout, "psbt_incomplete", psbt=held.psbt)

    @pytest.mark.parametrize("garbage", ["not a psbt", "cHNidP8BAAoCAAAAAAAAAAAAAA=="])
    def test_garbage_is_not_a_valid_psbt(
        self, session: Session, node: NodeClient, garbage: str
    ) -> None:
        payout = manual_payout(session)
        claim(session, node, payout)
        message = refused(session, node, payout, "invalid_psbt", psbt=garbage)
        assert message.startswith("not a valid PSBT: TX decode failed")

    def test_an_unsigned_transaction_is_refused(self, session: Session, node: NodeClient) -> None:
        payout, held = claimed(session, node)
        total = sum(value_of(node, i) for i in held.inputs)
        unsigned = node.create_raw_transaction(
            {payout.destination: AMOUNT, node.get_new_address(): total - AMOUNT - FEE},
            held.inputs,
        )
        refused(session, node, payout, "unsigned_input", tx_hex=unsigned)

    def test_a_transaction_whose_signature_does_not_verify_is_rejected_by_the_node(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        signed = EmbitTx.from_string(spend(node, held.inputs, {payout.destination: AMOUNT}))
        change = next(o for o in signed.vout if o.value != AMOUNT)
        change.value -= 1  # after signing: the SIGHASH_ALL signature no longer matches
        message = refused(session, node, payout, "rejected_by_node", tx_hex=signed.to_string())
        assert "would not accept" in message

    def test_a_fee_over_the_cap_is_refused(self, session: Session, node: NodeClient) -> None:
        payout, held = claimed(session, node)
        total = sum(value_of(node, i) for i in held.inputs)
        fee = 30_000  # ~200 sat/vB: over PAYOUTS_MAX_FEE_RATE_SAT_VB=50, under the node's cap
        raw = spend(node, held.inputs, {payout.destination: AMOUNT},
                    change=total - AMOUNT - fee)  # fmt: skip
        message = refused(session, node, payout, "fee_too_high", tx_hex=raw)
        assert "PAYOUTS_MAX_FEE_RATE_SAT_VB=50" in message


class TestAccepted:
    @pytest.mark.parametrize("form", ["psbt", "tx_hex"])
    def test_the_payment_plus_change_is_stored_then_broadcast(
        self, session: Session, node: NodeClient, form: str
    ) -> None:
        payout, held = claimed(session, node)
        signed, complete = node.wallet_process_psbt(held.psbt)
        assert complete
        body = {"psbt": signed} if form == "psbt" else {"tx_hex": node.finalize_psbt(signed)[0]}
        done = submit(session, node, payout, **body)  # type: ignore[arg-type]
        assert (done.state, done.outcome) == ("broadcast", "sent")
        assert node.call("getrawmempool") == [done.txid]

    def test_a_transaction_the_signer_broadcast_already_is_stored_with_its_real_fee(
        self, session: Session, node: NodeClient
    ) -> None:
        """testmempoolaccept says "already known" and gives no fee then; the stored fee (and
        so the transaction's fee rate) must still be the real one, not 0."""
        payout, held = claimed(session, node)
        signed, _ = node.wallet_process_psbt(held.psbt)
        raw = node.finalize_psbt(signed)[0]
        assert raw is not None
        txid = node.send_raw_transaction(raw)  # the signer's own broadcast, first
        entry = node.get_mempool_entry(txid)
        assert entry is not None
        paid = round(float(entry["fees"]["base"]) * 1e8)
        done = submit(session, node, payout, tx_hex=raw)
        assert done.txid == txid
        session.expire_all()
        stored = session.get(Payout, payout.id)
        assert stored is not None and stored.tx_id is not None
        row = session.get(Transaction, stored.tx_id)
        assert row is not None and row.fee_sats == paid > 0

    def test_a_transaction_without_change_is_accepted(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        total = sum(value_of(node, i) for i in held.inputs)
        # The payout takes what the inputs hold minus the fee: no change output at all.
        payout.amount_sats = total - FEE
        session.commit()
        done = submit(session, node, payout,
                      tx_hex=spend(node, held.inputs, {payout.destination: total - FEE},
                                   change=0))  # fmt: skip
        assert done.state == "broadcast"


class TestNodeOutages:
    @pytest.mark.parametrize(
        "method", ["finalizepsbt", "decoderawtransaction", "getaddressinfo", "testmempoolaccept"]
    )
    def test_an_outage_at_any_step_of_submit_is_node_unavailable(
        self, session: Session, node: NodeClient, method: str
    ) -> None:
        payout, held = claimed(session, node)
        signed, _ = node.wallet_process_psbt(held.psbt)
        node.call("devnode_drop_reply", method, 5)
        message = refused(session, node, payout, "node_unavailable", psbt=signed)
        assert "unreachable" in message
        node.call("devnode_clear_faults")
        assert submit(session, node, payout, psbt=signed).state == "broadcast"

    def test_a_node_down_during_broadcast_leaves_the_bytes_stored_for_resending(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        signed, _ = node.wallet_process_psbt(held.psbt)
        node.call("devnode_drop_reply", "sendrawtransaction", 1)
        done = submit(session, node, payout, psbt=signed)
        assert (done.state, done.outcome) == ("signed", "unknown")

    def test_a_claim_with_the_node_down_leaves_nothing_claimed(
        self, session: Session, node: NodeClient
    ) -> None:
        payout = manual_payout(session)
        node.call("devnode_drop_reply", "walletcreatefundedpsbt", 1)
        with pytest.raises(DomainError) as caught:
            claim(session, node, payout)
        assert (caught.value.kind, caught.value.code) == (ErrorKind.UNAVAILABLE, "node_unavailable")
        session.expire_all()
        row = session.get(Payout, payout.id)
        assert row is not None
        assert (row.state, row.claimed_by, row.reserved_inputs) == (S.APPROVED, None, None)


class TestClaimAtomicity:
    def test_the_claim_commits_together_with_its_reserved_inputs(
        self, session: Session, node: NodeClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # While the node builds the PSBT (after the CAS, before the reservation), look at the
        # row as a concurrent submit would: it must not see a claim without reserved inputs.
        seen_mid_claim: list[tuple[str, object]] = []
        build = node.decode_psbt

        def decode_and_peek(psbt: str) -> dict[str, object]:
            with Session(get_engine()) as other:
                row = other.get(Payout, payout.id)
                assert row is not None
                seen_mid_claim.append((row.state, row.reserved_inputs))
            return build(psbt)

        monkeypatch.setattr(node, "decode_psbt", decode_and_peek)
        payout = manual_payout(session)
        held = claim(session, node, payout)

        assert seen_mid_claim == [(S.APPROVED, None)]  # nothing committed yet
        with Session(get_engine()) as other:
            row = other.get(Payout, payout.id)
            assert row is not None
            assert (row.state, row.reserved_inputs) == (S.CLAIMED, held.inputs)
        assert set(held.inputs) <= set(node.list_lock_unspent())

    def test_a_failed_reservation_refuses_the_claim_and_unlocks_its_coins(
        self, session: Session, node: NodeClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # reserve_inputs is fenced by the claim token; losing it mid-claim is the failure.
        monkeypatch.setattr(manual, "reserve_inputs", lambda *_args: False)
        payout = manual_payout(session)
        with pytest.raises(DomainError) as caught:
            claim(session, node, payout)
        assert (caught.value.kind, caught.value.code) == (ErrorKind.CONFLICT, "invalid_state")
        assert node.list_lock_unspent() == []
        session.expire_all()
        assert session.get(Payout, payout.id).state == S.APPROVED  # type: ignore[union-attr]


def test_only_the_claim_holder_may_submit(session: Session, node: NodeClient) -> None:
    payout, held = claimed(session, node)
    signed, _ = node.wallet_process_psbt(held.psbt)
    with pytest.raises(DomainError) as caught:
        submit(session, node, payout, key="signer2", psbt=signed)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.CONFLICT, "invalid_state")


def test_unknown_payout_is_not_found(session: Session, node: NodeClient) -> None:
    with pytest.raises(DomainError) as caught:
        manual.claim(UnitOfWork(session), node, get_settings(), uuid.uuid4(), "signer")
    assert caught.value.kind == ErrorKind.NOT_FOUND
