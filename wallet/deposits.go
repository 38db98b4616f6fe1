package wallet

import (
	"fmt"
	"time"
)

// creditDeposit credits a deposit with enough confirmations: it first repays
// the account's debt, the rest goes to its escrow.
func (w *Wallet) creditDeposit(t *rw, op string, u *utxo, now time.Time) (bool, error) {
	debt, err := t.balance(DebtAccount(u.Account))
	if err != nil {
		return false, err
	}
	repay := min(u.Value, -debt)
	key := DepositKey(op, u.Block, u.Gen)
	ok, err := t.post(key, fmt.Sprintf("deposit %d sat at height %d", u.Value, u.Height), now,
		Posting{AcctExtDeposits, -u.Value},
		Posting{DebtAccount(u.Account), repay},
		Posting{EscrowAccount(u.Account), u.Value - repay})
	if err != nil {
		return false, err
	}
	u.CreditKey = key
	if err := t.setJSON(pUTXO+op, u); err != nil {
		return false, err
	}
	// A deposit ends delinquency once the account owes nothing and its escrow
	// covers the runway (RunwayPeriods at its current charge): dust does not,
	// and leaves the grace period running from the first missed period.
	escrow, err := t.balance(EscrowAccount(u.Account))
	if err != nil {
		return false, err
	}
	charge, err := t.getInt(pCharge + u.Account)
	if err != nil {
		return false, err
	}
	if debt+repay == 0 && w.coversRunway(escrow, charge) {
		if err := t.del(pDelinquent + u.Account); err != nil {
			return false, err
		}
	}
	w.log.Info("deposit credited", "account", u.Account, "outpoint", op, "sat", u.Value)
	return ok, nil
}

// reverseDeposit takes back a credited deposit whose block left the best
// chain: from escrow as far as it goes, the rest becomes the account's debt
// (and the account delinquent).
func (w *Wallet) reverseDeposit(t *rw, op string, u *utxo, now time.Time) error {
	escrow, err := t.balance(EscrowAccount(u.Account))
	if err != nil {
		return err
	}
	take := min(u.Value, escrow)
	if _, err := t.post(ReorgKey(op, u.Block, u.Gen), fmt.Sprintf("reorg dropped deposit at height %d", u.Height), now,
		Posting{AcctExtDeposits, u.Value},
		Posting{EscrowAccount(u.Account), -take},
		Posting{DebtAccount(u.Account), -(u.Value - take)}); err != nil {
		return err
	}
	if take < u.Value {
		var d delinquency
		was, err := t.getJSON(pDelinquent+u.Account, &d)
		if err != nil {
			return err
		}
		if !was {
			if err := t.setJSON(pDelinquent+u.Account, delinquency{Since: now.UTC()}); err != nil {
				return err
			}
		}
	}
	w.log.Warn("deposit reversed by a reorganisation", "account", u.Account, "outpoint", op, "sat", u.Value, "from_escrow", take)
	return nil
}

// settleConfirmations credits deposits that reached their confirmations
// (confsNeeded) and confirms payouts that reached MinConf at the current
// tip, in one batch.
func (w *Wallet) settleConfirmations(rep *SyncReport) error {
	t := w.begin()
	defer t.discard()
	tip, err := t.getInt(kTip)
	if err != nil {
		return err
	}
	now := w.cfg.Now()
	mc := int64(w.cfg.MinConf)
	type pending struct {
		op string
		u  *utxo
	}
	var due []pending
	err = t.scan(pUTXO, func(k string, v []byte) error {
		u, err := decodeUTXO(v)
		if err != nil {
			return err
		}
		if u.Account != "" && u.CreditKey == "" && tip-u.Height+1 >= w.confsNeeded(u) {
			due = append(due, pending{k, u})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range due {
		if _, err := w.creditDeposit(t, d.op, d.u, now); err != nil {
			return err
		}
		rep.Credited = append(rep.Credited, d.op)
	}
	var mined []*Payout
	err = t.scan(pPayout, func(k string, v []byte) error {
		p, err := decodePayout(v)
		if err != nil {
			return err
		}
		if p.State == PayoutMined && tip-p.Height+1 >= mc {
			mined = append(mined, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range mined {
		if err := w.payoutConfirm(t, p, now); err != nil {
			return err
		}
		rep.Confirmed = append(rep.Confirmed, p.ID)
	}
	return t.commit()
}
